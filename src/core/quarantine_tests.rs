//! The quarantine's plumbing in the core: what `open` does with the verdicts
//! of `paho::restore::at_open`, against the simulated Redis. The verdicts
//! here come from a stand-in (`judge`), so that these tests do not depend on
//! the check's rules.

use super::drive;
use super::sim::{Mode, SimRedis};
use super::{Core, Settings, BUDGET_COUNTER_FIELD, QUARANTINE_REASON_SUFFIX};
use crate::paho::restore::AtOpen;
use crate::paho::Version;

/// A stand-in for the check: an empty value or one starting with `garbage`
/// is quarantined, a `c5-` record is rewritten into a `c-` one (same value).
pub(super) fn judge(key: &str, value: &[u8], _client: Version) -> AtOpen {
    if value.is_empty() {
        AtOpen::Quarantine("empty record".to_owned())
    } else if value.starts_with(b"garbage") {
        AtOpen::Quarantine("garbage".to_owned())
    } else if let Some(id) = key.strip_prefix("c5-") {
        AtOpen::Rewrite { key: format!("c-{id}"), value: value.to_vec() }
    } else {
        AtOpen::Restore
    }
}

fn settings() -> Settings {
    Settings { judge: Some(judge), ..Settings::default() }
}

fn seeded(records: &[(&str, &[u8])]) -> SimRedis {
    let mut redis = SimRedis::default();
    for (key, value) in records {
        redis.hash.insert(key.as_bytes().to_vec(), value.to_vec());
    }
    redis
}

fn open(redis: &mut SimRedis, settings: Settings) -> Core {
    let mut core = Core::new("h".to_owned(), settings);
    redis.begin_call();
    drive::open(&mut core, redis).expect("open");
    core
}

fn keys(core: &mut Core, redis: &mut SimRedis) -> Vec<String> {
    redis.begin_call();
    let mut keys = drive::keys(core, redis);
    keys.sort();
    keys
}

/// The quarantine's entries as (key, value, reason).
fn quarantined(redis: &SimRedis) -> Vec<(String, Vec<u8>, String)> {
    let mut entries = Vec::new();
    for (field, value) in &redis.quarantine {
        let field = String::from_utf8_lossy(field).into_owned();
        if field.ends_with(QUARANTINE_REASON_SUFFIX) {
            continue;
        }
        let (key, _at) = field.rsplit_once('@').expect("an entry is {key}@{ms}");
        let why = format!("{field}{QUARANTINE_REASON_SUFFIX}");
        let reason = redis.quarantine.get(why.as_bytes()).expect("every entry has its reason");
        entries.push((key.to_owned(), value.clone(), String::from_utf8_lossy(reason).into_owned()));
    }
    entries.sort();
    entries
}

const BAD: [(&str, &[u8]); 3] = [("s-2", b""), ("c-3", b"garbage\x00\x01"), ("sc-4", b"")];

#[test]
fn open_moves_what_no_restore_takes_to_the_quarantine_and_paho_never_sees_it() {
    let mut records = vec![("s-1", b"good".as_slice()), ("c5-7", b"command")];
    records.extend(BAD);
    let mut redis = seeded(&records);
    let mut core = open(&mut redis, settings());
    assert_eq!(keys(&mut core, &mut redis), ["c-7", "s-1"], "Paho sees the good and the rewritten");
    for (key, _) in BAD {
        assert!(!core.contains(key));
    }
    assert_eq!(redis.keys(), ["c-7", "s-1"], "one repair: moved, rewritten, original removed");
    assert_eq!(
        quarantined(&redis),
        [
            ("c-3".to_owned(), b"garbage\x00\x01".to_vec(), "garbage".to_owned()),
            ("s-2".to_owned(), Vec::new(), "empty record".to_owned()),
            ("sc-4".to_owned(), Vec::new(), "empty record".to_owned()),
        ]
    );
    assert_eq!(core.take_repaired(), (3, 1));
    assert_eq!(redis.exchanges, 2, "HGETALL, then the repair");
}

#[test]
fn a_store_with_nothing_to_repair_opens_with_one_command() {
    let mut redis = seeded(&[("s-1", b"good")]);
    let mut core = open(&mut redis, settings());
    assert_eq!(redis.exchanges, 1);
    assert_eq!(core.take_repaired(), (0, 0));
    assert!(redis.quarantine.is_empty());
}

#[test]
fn a_rewrite_never_replaces_a_record_of_its_new_key() {
    let mut redis = seeded(&[("c-7", b"mine"), ("c5-7", b"theirs")]);
    let mut core = open(&mut redis, settings());
    assert_eq!(keys(&mut core, &mut redis), ["c-7"]);
    assert_eq!(redis.hash.get(b"c-7".as_slice()).map(Vec::as_slice), Some(b"mine".as_slice()));
    let entries = quarantined(&redis);
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].0.as_str(), entries[0].1.as_slice()), ("c5-7", b"theirs".as_slice()));
}

/// Redis refuses the repair (`-OOM`): the records stay in the hash, hidden
/// from Paho; the next write moves them first, so a record Paho writes under
/// one of their keys never overwrites it.
#[test]
fn a_refused_repair_leaves_the_records_in_the_hash_and_goes_with_the_next_write() {
    let mut records = vec![("s-1", b"good".as_slice()), ("c5-7", b"command")];
    records.extend(BAD);
    let mut redis = seeded(&records);
    redis.mode = Mode::Full;
    let mut core = open(&mut redis, settings());
    assert_eq!(keys(&mut core, &mut redis), ["c-7", "s-1"]);
    assert!(redis.quarantine.is_empty());
    assert_eq!(redis.keys(), ["c-3", "c5-7", "s-1", "s-2", "sc-4"], "nothing lost, nothing doubled");
    assert_eq!(core.take_repaired(), (0, 1));

    redis.mode = Mode::Up;
    redis.begin_call();
    drive::put(&mut core, &mut redis, "s-2", &[b"new"]).expect("put");
    assert_eq!(redis.keys(), ["c-7", "s-1", "s-2"]);
    assert_eq!(redis.hash.get(b"s-2".as_slice()).map(Vec::as_slice), Some(b"new".as_slice()));
    assert_eq!(quarantined(&redis).len(), 3, "the old s-2 was moved before the new one was written");
    assert_eq!(core.take_repaired(), (3, 0));
}

/// After a reconnect the check compares the table with the hash: records set
/// aside are neither stale fields to remove nor lost ones.
#[test]
fn the_check_after_a_reconnect_leaves_records_set_aside_alone() {
    let mut redis = seeded(&[("s-1", b"good"), ("s-2", b"")]);
    redis.mode = Mode::Full;
    let mut core = open(&mut redis, settings());
    redis.mode = Mode::Down;
    redis.begin_call();
    drive::remove(&mut core, &mut redis, "s-9").expect("remove");
    redis.mode = Mode::Up;
    redis.begin_call();
    let _ = drive::keys(&mut core, &mut redis);
    assert_eq!(redis.keys(), ["s-1", "s-2"], "s-2 is still there");
    redis.begin_call();
    drive::remove(&mut core, &mut redis, "s-1").expect("remove");
    assert!(redis.keys().is_empty());
    assert_eq!(quarantined(&redis).len(), 1);
}

/// A repair that timed out and ran late moved the records already: the next
/// one finds the hash no longer holds them as read, and moves nothing twice.
#[test]
fn a_repair_that_ran_late_is_not_repeated() {
    let mut redis = seeded(&[("s-1", b"good"), ("s-2", b"")]);
    redis.mode = Mode::Full;
    let mut core = open(&mut redis, settings());
    redis.mode = Mode::Hung;
    redis.begin_call();
    drive::put(&mut core, &mut redis, "s-2", &[b"new"]).expect("a PUBLISH record waits in memory");
    assert!(redis.quarantine.is_empty());
    redis.mode = Mode::Up;
    redis.patience.answered();
    redis.begin_call();
    drive::put(&mut core, &mut redis, "s-3", &[b"three"]).expect("put");
    assert_eq!(quarantined(&redis).len(), 1, "moved once, by the late repair");
    assert_eq!(redis.hash.get(b"s-2".as_slice()).map(Vec::as_slice), Some(b"new".as_slice()));
    assert_eq!(redis.keys(), ["s-1", "s-2", "s-3"]);
}

/// Paho's `clear` (a clean session) while the repair is due: the records are
/// moved, then the hash deleted, in one script.
#[test]
fn a_clear_while_the_repair_is_due_moves_the_records_first() {
    let mut redis = seeded(&[("s-1", b"good"), ("s-2", b"")]);
    redis.mode = Mode::Full;
    let mut core = open(&mut redis, settings());
    redis.mode = Mode::Up;
    redis.begin_call();
    drive::clear(&mut core, &mut redis).expect("clear");
    assert!(redis.hash.is_empty());
    assert_eq!(quarantined(&redis).len(), 1);
    assert_eq!(core.take_repaired(), (1, 0));
}

/// With a budget, the repair takes the byte count again from what stays.
#[test]
fn with_a_budget_the_byte_count_is_of_what_stays() {
    let mut redis = seeded(&[("s-1", b"good"), ("c-3", b"garbage!"), ("c5-7", b"command")]);
    redis.hash.insert(BUDGET_COUNTER_FIELD.as_bytes().to_vec(), b"999".to_vec());
    let settings = Settings { budget: Some(100), ..settings() };
    let mut core = open(&mut redis, settings);
    let count = redis.hash.get(BUDGET_COUNTER_FIELD.as_bytes()).cloned();
    assert_eq!(count, Some(b"11".to_vec()), "good + command");
    assert_eq!(redis.value_bytes(), 11);
    redis.begin_call();
    drive::put(&mut core, &mut redis, "s-5", &[b"12345"]).expect("put");
    assert_eq!(redis.hash.get(BUDGET_COUNTER_FIELD.as_bytes()).cloned(), Some(b"16".to_vec()));
}

/// Two quarantines of one key (two opens in one millisecond, or a record
/// set aside again after an operator put it back) keep both values.
#[test]
fn two_quarantines_of_one_key_stay_apart() {
    let mut redis = seeded(&[("s-2", b"")]);
    let _ = open(&mut redis, settings());
    redis.hash.insert(b"s-2".to_vec(), b"garbage 2".to_vec());
    let _ = open(&mut redis, settings());
    let entries = quarantined(&redis);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(redis.hash.is_empty());
}
