//! The crash-point checker: real Paho call sequences replayed into the core,
//! against a simulated Redis that fails, hangs, refuses and restarts empty;
//! after every call, what Redis holds is taken as the state a crash would
//! leave, and checked against what Paho needs.
//!
//! The traces (`tests/fixtures/traces`, recorded by
//! `tools/record_traces.rs` with real Paho against mosquitto and fake
//! brokers) give, call by call, what Paho's own store holds: a map in memory.
//! A restarted client may safely restore exactly that map, with one change:
//! between `MQTTAsync_processCommand`'s removal of a QoS ≥ 1 message's
//! command record and its write of the PUBLISH record, Paho's map holds the
//! message in no record (a crash there loses it), and Redis must still hold
//! the command record. Per key and instant, with Redis answering:
//! - every record of the map is in Redis, with its value (nothing Paho still
//!   needs is missing: a QoS 1 message until acknowledged, a QoS 2 PUBLISH
//!   until PUBREC and its PUBREL until PUBCOMP);
//! - Redis holds nothing else (a sent QoS 0 message, a SUBSCRIBE, a message
//!   Paho dropped, a completed exchange is never restorable), except the
//!   command record of a message in the window above;
//! - never a message's command record and its PUBLISH record at once (it
//!   would be sent twice).
//!
//! Replayed on a hash seeded with records no restore takes (`SEEDED`, with
//! the quarantine's plumbing given its verdicts by a stand-in for the check),
//! also, at every instant: Paho never sees a record set aside; each one's
//! exact bytes are in the hash or in the quarantine; a rewritten record is
//! never in the hash both as its original and as its rewrite.
//!
//! Where Paho itself gives no guarantee, or Redis cannot be told, the
//! checker allows, and the README names: records Paho changed while Redis was
//! unreachable, hung or refusing writes may differ from the map until the
//! store's next write reaches Redis (kept records are written, owed removals
//! run, late writes are undone); records a Redis restart without persistence
//! lost may stay lost unless the store still had them in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::drive;
use super::sim::{Mode, SimRedis};
use super::{CacheLimits, Core, Settings};
use crate::paho::{self, Version};

/// One recorded Paho call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Open(String),
    Close,
    Put(String, Vec<u8>),
    Get(String, Option<Vec<u8>>),
    Remove(String),
    Keys(Vec<String>),
    Contains(String, bool),
    Clear,
}

#[derive(Debug)]
struct Trace {
    name: String,
    calls: Vec<Call>,
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|at| u8::from_str_radix(&text[2 * at..2 * at + 2], 16).expect("a hex byte"))
        .collect()
}

fn parse(name: &str, text: &str) -> Trace {
    let calls = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["open", client, uri] => Call::Open(format!("{client}:{uri}")),
                ["close"] => Call::Close,
                ["clear"] => Call::Clear,
                ["put", key, value] => Call::Put((*key).to_owned(), hex(value)),
                ["put", key] => Call::Put((*key).to_owned(), Vec::new()),
                ["get", key, "!"] => Call::Get((*key).to_owned(), None),
                ["get", key, value] => Call::Get((*key).to_owned(), Some(hex(value))),
                ["get", key] => Call::Get((*key).to_owned(), Some(Vec::new())),
                ["remove", key] => Call::Remove((*key).to_owned()),
                ["keys", keys @ ..] => Call::Keys(keys.iter().map(|key| (*key).to_owned()).collect()),
                ["contains", key, answer] => Call::Contains((*key).to_owned(), *answer == "yes"),
                _ => panic!("{name}: cannot read the trace line {line:?}"),
            }
        })
        .collect();
    Trace { name: name.to_owned(), calls }
}

fn traces() -> Vec<Trace> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/traces");
    let mut traces: Vec<Trace> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/traces")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "trace"))
        .map(|path| {
            let name = path.file_stem().expect("a file name").to_string_lossy().into_owned();
            parse(&name, &std::fs::read_to_string(&path).expect("a readable trace"))
        })
        .collect();
    traces.sort_by(|a, b| a.name.cmp(&b.name));
    traces
}

/// What happens to the simulated Redis before a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Redis turns to `mode` for `calls` calls.
    Mode(Mode, usize),
    /// Redis restarts without its data.
    RestartEmpty,
    /// The store's lease is lost (another process took the store over while
    /// this one was paused): the core is fenced for good. From here on no
    /// write or removal of this core may reach Redis, which is the new
    /// owner's; what Paho stores is kept in memory.
    LoseLease,
    /// The lease is not confirmed in time for `calls` calls (Redis
    /// unreachable for its renewal), then confirmed again: the core is
    /// fenced meanwhile, as if Redis were down, and must catch up after.
    Unconfirmed(usize),
}

/// Faults by the index of the call they come before.
type Schedule = BTreeMap<usize, Fault>;

/// Small enough that the offline traces outgrow the record cache.
const SMALL_CACHE: CacheLimits = CacheLimits { records: 8, bytes: 2048 };

/// The command record's key and its PUBLISH record's key, if `value` is a
/// QoS ≥ 1 PUBLISH command.
fn publish_record_of(key: &str, value: &[u8]) -> Option<String> {
    paho::Command::read(value).publish_record_key(key)
}

/// Whether the removal of command record `key` at `at` is Paho sending it:
/// the first call after it that is not about another command record (which
/// `MQTTAsync_addCommand` may make meanwhile) writes its PUBLISH record.
fn is_sent(calls: &[Call], at: usize, publish: &str) -> bool {
    let command_call = |call: &&Call| match call {
        Call::Put(key, _) | Call::Remove(key) => paho::is_command_key(key),
        _ => false,
    };
    let next = calls.iter().skip(at + 1).find(|call| !command_call(call));
    matches!(next, Some(Call::Put(key, _)) if key == publish)
}

/// Counts of what a replay checked.
#[derive(Debug, Default, Clone, Copy)]
struct Checked {
    calls: usize,
    crash_points: usize,
}

/// Replays `trace` with `schedule`; returns what it checked or the first violation.
fn replay(trace: &Trace, schedule: &Schedule, pipelined: bool) -> Result<Checked, String> {
    replay_with(trace, schedule, Settings { cache: SMALL_CACHE, ..Settings::default() }, pipelined, false)
}

/// Records no restore takes (by the stand-in `quarantine_tests::judge`),
/// under keys the traces use too, so that Paho writes over them.
const SEEDED: [(&str, &[u8]); 4] =
    [("s-1", b""), ("c-1", b"garbage c-1"), ("c-2", b""), ("sc-2", b"garbage\x00sc-2")];

/// A record of another version, rewritten at open (by the stand-in) into
/// `REWRITTEN`: a key no trace uses, so Paho never acts on it.
const ORIGINAL: (&str, &[u8]) = ("c5-60000", b"a command of another version");
const REWRITTEN: &str = "c-60000";

/// `replay` on a hash seeded with `SEEDED` and `ORIGINAL`, under `budget`.
fn replay_seeded(
    trace: &Trace,
    schedule: &Schedule,
    pipelined: bool,
    budget: Option<u64>,
) -> Result<Checked, String> {
    let settings = Settings {
        cache: SMALL_CACHE,
        budget,
        judge: Some(super::quarantine_tests::judge),
        ..Settings::default()
    };
    replay_inner(trace, schedule, settings, pipelined, false, true)
}

/// The seeded records' invariant (see the module doc); `lost`: Redis
/// restarted without its data, `cleared`: Paho cleared the store.
fn check_seeded(redis: &SimRedis, lost: bool, cleared: bool) -> Result<(), String> {
    if lost {
        return Ok(());
    }
    for (key, value) in SEEDED {
        let in_hash = redis.hash.get(key.as_bytes()).is_some_and(|held| held == value);
        let prefix = format!("{key}@");
        let quarantined = redis.quarantine.iter().any(|(entry, held)| {
            entry.starts_with(prefix.as_bytes())
                && !entry.ends_with(super::QUARANTINE_REASON_SUFFIX.as_bytes())
                && held == value
        });
        if !in_hash && !quarantined {
            return Err(format!(
                "the bytes of {key}, set aside, are neither in the hash nor in the quarantine"
            ));
        }
    }
    let original = redis.hash.contains_key(ORIGINAL.0.as_bytes());
    let rewritten = redis.hash.contains_key(REWRITTEN.as_bytes());
    if original && rewritten {
        return Err(format!("the hash holds both {} and its rewrite {REWRITTEN}", ORIGINAL.0));
    }
    if !original && !rewritten && !cleared {
        return Err(format!("the hash holds neither {} nor its rewrite {REWRITTEN}", ORIGINAL.0));
    }
    Ok(())
}

/// `pipelined`: against a Redis reached as over the Unix socket, where a
/// write is durable once sent and its reply comes later. `legacy_04`: with
/// 0.4's rule, emulated around the store: every command record's removal
/// waits for the next write.
fn replay_with(
    trace: &Trace,
    schedule: &Schedule,
    settings: Settings,
    pipelined: bool,
    legacy_04: bool,
) -> Result<Checked, String> {
    replay_inner(trace, schedule, settings, pipelined, legacy_04, false)
}

/// `seeded`: on a hash seeded as `replay_seeded` says.
fn replay_inner(
    trace: &Trace,
    schedule: &Schedule,
    settings: Settings,
    pipelined: bool,
    legacy_04: bool,
    seeded: bool,
) -> Result<Checked, String> {
    // The client that recorded the trace: `open` checks records for its version.
    let version = if trace.name.starts_with("v5") { Version::V5 } else { Version::V3 };
    let settings = Settings { version, ..settings };
    let mut held_back: Vec<String> = Vec::new();
    let mut redis = SimRedis::default();
    redis.pipelined = pipelined;
    if seeded {
        for (key, value) in SEEDED.into_iter().chain([ORIGINAL]) {
            redis.hash.insert(key.as_bytes().to_vec(), value.to_vec());
        }
    }
    // Redis lost the seeded records (a restart without its data), or Paho cleared them.
    let (mut seed_lost, mut seed_cleared) = (false, false);
    let mut core: Option<Core> = None;
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Paho changed these while Redis could not be told: Redis may lack them
    // (or hold an older value) until the store's next write reaches it ...
    let mut maybe_missing: BTreeSet<String> = BTreeSet::new();
    // ... or may still hold them until its next removal or write does.
    let mut maybe_extra: BTreeSet<String> = BTreeSet::new();
    // Keys a restart without persistence may have lost for good.
    let mut lost: BTreeSet<String> = BTreeSet::new();
    // Command records in `MQTTAsync_processCommand`'s window, with their PUBLISH record's key.
    let mut in_window: BTreeMap<String, String> = BTreeMap::new();
    // Every sent message's command record, by its PUBLISH record's key.
    let mut sent_from: BTreeMap<String, String> = BTreeMap::new();
    let mut fault_left = 0usize;
    // The lost lease: Redis's count of changing exchanges when it was lost.
    let mut fenced_at: Option<usize> = None;
    let mut unconfirmed_left = 0usize;
    let mut checked = Checked::default();
    for (at, call) in trace.calls.iter().enumerate() {
        let here = || format!("{} call {at} {call:?}", trace.name);
        match schedule.get(&at) {
            Some(Fault::Mode(mode, calls)) => {
                redis.mode = *mode;
                fault_left = *calls;
            }
            Some(Fault::RestartEmpty) => {
                redis.restart_empty();
                lost.extend(model.keys().cloned());
                seed_lost = true;
            }
            Some(Fault::LoseLease) if fenced_at.is_none() => {
                if let Some(store) = core.as_mut() {
                    store.fence(Some("lost".to_owned()));
                    fenced_at = Some(redis.changes);
                }
            }
            Some(Fault::Unconfirmed(calls)) => unconfirmed_left = *calls,
            Some(Fault::LoseLease) | None => {}
        }
        if fault_left == 0 {
            redis.mode = Mode::Up;
        } else {
            fault_left -= 1;
        }
        let unconfirmed = unconfirmed_left > 0;
        unconfirmed_left = unconfirmed_left.saturating_sub(1);
        if let Some(store) = core.as_mut().filter(|_| fenced_at.is_none()) {
            let why = unconfirmed.then(|| "unconfirmed".to_owned());
            if store.fenced() != why.as_deref() {
                store.fence(why);
            }
        }
        let up = redis.mode == Mode::Up && !unconfirmed && fenced_at.is_none();
        if fenced_at.is_some() && matches!(call, Call::Open(_) | Call::Close) {
            // The fenced store's process ends here (a restart is a new owner's business).
            return Ok(checked);
        }
        redis.begin_call();
        match call {
            Call::Open(hash) => {
                let mut opened = Core::new(hash.clone(), settings);
                if drive::open(&mut opened, &mut redis).is_ok() {
                    core = Some(opened);
                } else {
                    // Paho gives up creating the client; the trace goes on as
                    // recorded, so replay it on a store opened once Redis is back.
                    redis.mode = Mode::Up;
                    fault_left = 0;
                    redis.begin_call();
                    drive::open(&mut opened, &mut redis).map_err(|e| format!("{}: open: {e}", here()))?;
                    core = Some(opened);
                }
                if let Some(opened) = core.as_ref().filter(|_| seeded) {
                    for (key, _) in SEEDED {
                        if opened.contains(key) && !model.contains_key(key) {
                            return Err(format!("{}: Paho sees {key}, which no restore takes", here()));
                        }
                    }
                }
            }
            Call::Close => {
                if let Some(mut closing) = core.take() {
                    drive::close(&mut closing, &mut redis);
                    if closing.owes() {
                        // What Redis never took is lost with the process (the
                        // store logs it); from here on the recorded restore is
                        // not what this store's restart would see.
                        checked.calls += 1;
                        return Ok(checked);
                    }
                }
            }
            Call::Put(key, value) => {
                let store = core.as_mut().ok_or_else(|| format!("{}: not open", here()))?;
                for removal in held_back.drain(..) {
                    drive::remove(store, &mut redis, &removal)
                        .map_err(|e| format!("{}: remove: {e}", here()))?;
                }
                let result = drive::put(store, &mut redis, key, &[value]);
                match result {
                    Ok(()) => {
                        model.insert(key.clone(), value.clone());
                    }
                    Err(error) if paho::put_failure_ignored(key) => {
                        return Err(format!("{}: a put Paho ignores failed: {error}", here()));
                    }
                    Err(_) if up => return Err(format!("{}: put failed with Redis up", here())),
                    // Paho acts on it (`q-`): the store must be unchanged.
                    Err(_) => {}
                }
                if up {
                    maybe_missing.clear();
                    maybe_extra.clear();
                } else {
                    // Redis cannot take the PUBLISH record: the message stays
                    // restorable as its command record (a duplicate after a
                    // crash) until it can.
                    maybe_extra.extend(
                        in_window.iter().filter(|(_, publish)| *publish == key).map(|(c, _)| c.clone()),
                    );
                    maybe_missing.insert(key.clone());
                }
                in_window.retain(|_, publish| publish != key);
                lost.remove(key);
            }
            Call::Get(key, recorded) => {
                let store = core.as_mut().ok_or_else(|| format!("{}: not open", here()))?;
                let got = drive::get(store, &mut redis, key).ok().map(|(value, _)| value);
                let knowable = up && !lost.contains(key) && !maybe_missing.contains(key);
                if knowable && got != *recorded && model.get(key) == recorded.as_ref() {
                    return Err(format!("{}: get answered {got:?}", here()));
                }
            }
            Call::Remove(key) => {
                let store = core.as_mut().ok_or_else(|| format!("{}: not open", here()))?;
                let value = model.remove(key);
                if legacy_04 && paho::is_command_key(key) {
                    held_back.push(key.clone());
                } else {
                    drive::remove(store, &mut redis, key).map_err(|e| format!("{}: remove: {e}", here()))?;
                }
                if let Some(publish) = value.as_deref().and_then(|value| publish_record_of(key, value)) {
                    if is_sent(&trace.calls, at, &publish) {
                        sent_from.insert(publish.clone(), key.clone());
                        in_window.insert(key.clone(), publish);
                    }
                }
                if !up {
                    maybe_extra.insert(key.clone());
                    // Its command record may still stand in for a PUBLISH record never written.
                    maybe_extra.extend(sent_from.get(key).cloned());
                } else if value.is_some() && !lost.contains(key) && !in_window.contains_key(key) {
                    // Owed removals go with this one.
                    maybe_extra.clear();
                }
            }
            Call::Keys(recorded) => {
                let store = core.as_mut().ok_or_else(|| format!("{}: not open", here()))?;
                let mut keys = drive::keys(store, &mut redis);
                // The rewritten record is not in the recorded trace.
                keys.retain(|key| !(seeded && key == REWRITTEN));
                // The order is the store's (`paho::restore_order`), the set Paho's.
                keys.sort();
                let expected: Vec<String> = model.keys().cloned().collect();
                if lost.is_empty() && keys != expected {
                    return Err(format!(
                        "{}: keys answered {keys:?}, Paho's store holds {expected:?}",
                        here()
                    ));
                }
                if !lost.is_empty() && !keys.iter().all(|key| model.contains_key(key)) {
                    return Err(format!("{}: keys answered {keys:?}, more than Paho's store", here()));
                }
                if *recorded != expected {
                    return Err(format!("{}: the trace disagrees with its own calls: {expected:?}", here()));
                }
            }
            Call::Contains(key, recorded) => {
                let store = core.as_ref().ok_or_else(|| format!("{}: not open", here()))?;
                if store.contains(key) != *recorded && !lost.contains(key) {
                    return Err(format!("{}: contains answered {}", here(), store.contains(key)));
                }
            }
            Call::Clear => {
                let store = core.as_mut().ok_or_else(|| format!("{}: not open", here()))?;
                if drive::clear(store, &mut redis).is_ok() {
                    seed_cleared = true;
                    model.clear();
                    in_window.clear();
                    lost.clear();
                } else if up {
                    return Err(format!("{}: clear failed with Redis up", here()));
                }
                if !up {
                    maybe_extra.extend(model.keys().cloned());
                }
            }
        }
        checked.calls += 1;
        if let Some(store) = &core {
            store.check_queues().map_err(|e| format!("{}: {e}", here()))?;
        }
        if let Some(at) = fenced_at {
            if redis.changes != at {
                return Err(format!("{}: a fenced store sent a write or removal", here()));
            }
            continue; // Redis is the new owner's: what it holds is not this store's to check
        }
        // Not Paho's: what `check_seeded` checks.
        let mut extra = maybe_extra.clone();
        if seeded {
            extra.extend([ORIGINAL.0, REWRITTEN].map(str::to_owned));
            for (key, value) in SEEDED {
                if redis.hash.get(key.as_bytes()).is_some_and(|held| held == value) {
                    extra.insert(key.to_owned());
                }
            }
            if !up && !seed_cleared {
                // A clear Redis could not take may have run late.
                seed_cleared = matches!(call, Call::Clear);
            }
            check_seeded(&redis, seed_lost, seed_cleared).map_err(|e| format!("{}: {e}", here()))?;
        }
        let excused = Excused { missing: &maybe_missing, extra: &extra, lost: &lost };
        check_crash_state(&redis, &model, &excused, &in_window).map_err(|e| format!("{}: {e}", here()))?;
        checked.crash_points += 1;
    }
    Ok(checked)
}

/// Where Redis may differ from Paho's store, and why.
struct Excused<'a> {
    missing: &'a BTreeSet<String>,
    extra: &'a BTreeSet<String>,
    lost: &'a BTreeSet<String>,
}

/// What a crash right now would restore, against what Paho needs.
fn check_crash_state(
    redis: &SimRedis,
    model: &BTreeMap<String, Vec<u8>>,
    excused: &Excused<'_>,
    in_window: &BTreeMap<String, String>,
) -> Result<(), String> {
    let held: BTreeMap<String, &Vec<u8>> = redis
        .keys()
        .into_iter()
        .filter_map(|key| redis.hash.get(key.as_bytes()).map(|value| (key, value)))
        .collect();
    for (key, value) in model {
        let may_differ = excused.missing.contains(key) || excused.lost.contains(key);
        match held.get(key) {
            None if !may_differ => return Err(format!("Paho still needs {key}, Redis lacks it")),
            Some(held) if *held != value && !may_differ && !excused.extra.contains(key) => {
                return Err(format!("Redis holds another value of {key}"));
            }
            _ => {}
        }
    }
    for command in in_window.keys() {
        // A command record Redis never took (it was down) is not durable here either.
        if !held.contains_key(command)
            && !excused.missing.contains(command)
            && !excused.lost.contains(command)
        {
            return Err(format!("{command} is being sent: Redis must hold it until its PUBLISH record"));
        }
    }
    for (key, value) in &held {
        // A sent message whose PUBLISH record Redis has not taken yet stays
        // restorable as its command record.
        let publish_not_durable = publish_record_of(key, value)
            .is_some_and(|publish| model.contains_key(&publish) && excused.missing.contains(&publish));
        if !model.contains_key(key)
            && !in_window.contains_key(key)
            && !excused.extra.contains(key)
            && !publish_not_durable
        {
            return Err(format!("Redis holds {key}, which Paho has acted on: a crash would restore it"));
        }
    }
    for (key, value) in &held {
        if let Some(publish) = publish_record_of(key, value) {
            if held.contains_key(&publish) {
                return Err(format!("Redis holds both {key} and {publish}: a crash would send it twice"));
            }
        }
    }
    Ok(())
}

#[test]
fn the_traces_cover_what_the_checker_is_for() {
    let traces = traces();
    let names: Vec<&str> = traces.iter().map(|trace| trace.name.as_str()).collect();
    for wanted in
        ["qos0", "qos1", "qos2", "offline", "delete-oldest", "subscribe", "reconnect", "pubrel", "restart"]
    {
        for version in ["v311-", "v5-"] {
            assert!(
                names.iter().any(|name| name.starts_with(version) && name.contains(wanted)),
                "no {version}{wanted} trace in {names:?}"
            );
        }
    }
    let offline = traces.iter().find(|trace| trace.name == "v311-offline-buffer").expect("offline trace");
    let queued = offline
        .calls
        .iter()
        .filter(|call| matches!(call, Call::Put(key, _) if key.starts_with("c-")))
        .count();
    assert!(queued > SMALL_CACHE.records * 4, "the offline trace outgrows the cache: {queued} commands");
}

/// The Paho behaviour `paho::CommandRemoval` relies on, as real Paho showed
/// it: a QoS ≥ 1 command record removed right after its read-back is
/// followed by its PUBLISH record's write (`MQTTAsync_processCommand`), with
/// at most other command records' calls in between; one removed without a
/// read-back right before (`MQTTAsync_addCommand` dropping the oldest) is
/// never sent. Re-recorded traces of a Paho that changed fail here.
#[test]
fn paho_reads_back_what_it_sends_and_drops_without_reading() {
    let (mut sent, mut dropped) = (0, 0);
    for trace in traces() {
        let mut model: BTreeMap<&str, &[u8]> = BTreeMap::new();
        for (at, call) in trace.calls.iter().enumerate() {
            match call {
                Call::Put(key, value) => {
                    model.insert(key, value);
                }
                Call::Remove(key) => {
                    let value = model.remove(key.as_str());
                    let Some(publish) = value.and_then(|value| publish_record_of(key, value)) else {
                        continue;
                    };
                    let previous = at.checked_sub(1).and_then(|before| trace.calls.get(before));
                    if matches!(previous, Some(Call::Get(read, _)) if read == key) {
                        assert!(
                            is_sent(&trace.calls, at, &publish),
                            "{}: call {at}: {key} read back, removed, not sent",
                            trace.name
                        );
                        sent += 1;
                    } else {
                        assert!(
                            !is_sent(&trace.calls, at, &publish),
                            "{}: call {at}: sent without a read-back",
                            trace.name
                        );
                        dropped += 1;
                    }
                }
                Call::Clear => model.clear(),
                _ => {}
            }
        }
    }
    assert!(sent > 300 && dropped >= 10, "{sent} sent, {dropped} dropped");
}

#[test]
fn every_crash_point_of_every_trace_is_safe_with_redis_answering() {
    let mut total = Checked::default();
    for trace in traces() {
        for pipelined in [false, true] {
            let checked =
                replay(&trace, &Schedule::new(), pipelined).unwrap_or_else(|violation| panic!("{violation}"));
            total.calls += checked.calls;
            total.crash_points += checked.crash_points;
        }
    }
    println!("checked {} calls, {} crash points, no faults", total.calls, total.crash_points);
    assert!(total.crash_points > 6000, "{total:?}");
}

#[test]
fn every_crash_point_is_safe_on_a_hash_seeded_with_records_no_restore_takes() {
    let mut total = Checked::default();
    for trace in traces() {
        for pipelined in [false, true] {
            for budget in [None, Some(1 << 20)] {
                let checked = replay_seeded(&trace, &Schedule::new(), pipelined, budget)
                    .unwrap_or_else(|violation| panic!("{violation}"));
                total.calls += checked.calls;
                total.crash_points += checked.crash_points;
            }
        }
    }
    println!(
        "checked {} calls, {} crash points on seeded hashes, no faults",
        total.calls, total.crash_points
    );
    assert!(total.crash_points > 12000, "{total:?}");
}

/// The checker finds what it is for: with 0.4's rule (every command record's
/// removal waits for the next write), a sent QoS 0 message, a sent SUBSCRIBE
/// and a message Paho dropped stay restorable.
#[test]
fn the_checker_fails_the_04_rule_for_command_records() {
    let settings = Settings { cache: SMALL_CACHE, ..Settings::default() };
    for name in
        ["v311-qos0-online", "v5-qos0-online", "v311-subscribe", "v311-delete-oldest", "v5-delete-oldest"]
    {
        let trace = traces().into_iter().find(|trace| trace.name == name).expect("a trace");
        let verdict = replay_with(&trace, &Schedule::new(), settings, false, true);
        assert!(
            verdict.as_ref().is_err_and(|violation| violation.contains("acted on")),
            "{name}: the checker must catch it: {verdict:?}"
        );
    }
}

fn fault() -> impl Strategy<Value = Fault> {
    let mode = prop_oneof![Just(Mode::Down), Just(Mode::Hung), Just(Mode::Full), Just(Mode::Loading)];
    prop_oneof![
        6 => (mode, 1usize..30).prop_map(|(mode, calls)| Fault::Mode(mode, calls)),
        1 => Just(Fault::RestartEmpty),
    ]
}

/// The lease's faults among Redis's: a lost lease at some call, and leases
/// not confirmed in time for a while. After the loss, no write or removal
/// of the store may reach Redis, puts Paho ignores the result of still
/// succeed (kept in memory) and the store's answers still follow Paho; an
/// unconfirmed lease, once confirmed again, leaves Redis as safe as before.
#[test]
fn a_lost_lease_stops_every_write_and_an_unconfirmed_one_catches_up() {
    let cases = std::env::var("PMR_CHECKER_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(40);
    let (fenced, checked) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    for trace in traces() {
        let len = trace.calls.len();
        let lease = prop_oneof![
            2 => (1usize..40).prop_map(Fault::Unconfirmed),
            1 => Just(Fault::LoseLease),
        ];
        let faults = prop_oneof![3 => lease, 1 => fault()];
        let schedule = (prop::collection::btree_map(0..len, faults, 1..5), any::<bool>());
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        let result = TestRunner::new(config).run(&schedule, |(schedule, pipelined)| {
            let done = replay(&trace, &schedule, pipelined).map_err(TestCaseError::fail)?;
            checked.set(checked.get() + done.crash_points);
            if schedule.values().any(|fault| *fault == Fault::LoseLease) {
                fenced.set(fenced.get() + 1);
            }
            Ok(())
        });
        if let Err(error) = result {
            panic!("{}: {error}", trace.name);
        }
    }
    println!("{} schedules lost the lease; {} crash points checked", fenced.get(), checked.get());
    assert!(fenced.get() > 100, "{}", fenced.get());
}

/// Cases per trace; `PMR_CHECKER_CASES` overrides.
const CASES_PER_TRACE: u32 = 150;

/// Cases per trace under qemu-user (`PMR_TEST_RUNNER` is set by
/// `scripts/qemu-run.sh`), which runs the checker about 7 times slower: the
/// emulated run checks the core on the target, the native run the interleavings.
const CASES_PER_TRACE_EMULATED: u32 = 20;

#[test]
fn every_crash_point_stays_safe_through_failures_hangs_refusals_and_restarts() {
    let default_cases = if std::env::var_os("PMR_TEST_RUNNER").is_some() {
        CASES_PER_TRACE_EMULATED
    } else {
        CASES_PER_TRACE
    };
    let cases = std::env::var("PMR_CHECKER_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default_cases);
    let crash_points = std::cell::Cell::new(0usize);
    let interleavings = std::cell::Cell::new(0usize);
    for trace in traces() {
        let len = trace.calls.len();
        let schedule = (prop::collection::btree_map(0..len, fault(), 1..6), any::<bool>());
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&schedule, |(schedule, pipelined)| {
            let checked = replay(&trace, &schedule, pipelined).map_err(TestCaseError::fail)?;
            crash_points.set(crash_points.get() + checked.crash_points);
            // The same faults, on a hash seeded with records no restore takes.
            let checked = replay_seeded(&trace, &schedule, pipelined, None).map_err(TestCaseError::fail)?;
            crash_points.set(crash_points.get() + checked.crash_points);
            interleavings.set(interleavings.get() + 1);
            Ok(())
        });
        if let Err(error) = result {
            panic!("{}: {error}", trace.name);
        }
    }
    println!("checked {} crash points in {} fault interleavings", crash_points.get(), interleavings.get());
}
