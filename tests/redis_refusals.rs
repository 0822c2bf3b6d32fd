//! What Redis refuses, and how the store reports it: the store's own
//! `max_store_bytes` budget (enforced by Redis), a Redis at `maxmemory`, and a
//! hash name already used by another type of key.

mod support;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::log_capture::{lines_here, logged_here};
use support::RedisServer;

const HASH: &str = "dev:broker:1883";

fn budget_store(redis: &RedisServer, limit: u64) -> RedisPersistence {
    support::log_capture::install();
    let mut store =
        RedisPersistence::builder().url(redis.url()).max_store_bytes(limit).build().expect("valid");
    store.open("dev", "broker:1883").expect("open");
    store
}

/// Paho carries on whatever a `put` returns (see `RedisPersistence`'s
/// Failures), so a record beyond the budget waits in memory, with a clear
/// reason in the log, and goes with the next write that fits.
#[test]
fn a_put_beyond_the_budget_waits_in_memory_with_a_clear_reason() {
    let redis = RedisServer::start();
    let mut store = budget_store(&redis, 100);
    store.put("s-1", vec![&[1u8; 60][..]]).expect("60 of 100 bytes");
    store.put("q-2", vec![&[2u8; 30][..], &[3u8; 20][..]]).expect("110 of 100 bytes: kept in memory");
    assert_eq!(store.unwritten(), 1);
    // This test's lines only: other tests here log the very same refusal of `q-2`.
    assert!(
        logged_here(
            "WARN",
            &[
                "put of key \"q-2\"",
                "store `dev:broker:1883` is full",
                "would hold 110 bytes",
                "max_store_bytes is 100"
            ]
        ),
        "a clear reason in the log: {:#?}",
        lines_here()
    );
    assert_eq!(redis.fields(HASH), ["paho-mqtt-redis:bytes", "s-1"], "nothing half-written");
    assert_eq!(store.keys().expect("keys"), ["q-2", "s-1"], "Paho never sees the byte count");
    assert_eq!(store.get("q-2").expect("served from memory"), [[2u8; 30].as_slice(), &[3u8; 20]].concat());

    // Removing frees room: the next write takes the waiting record along.
    store.remove("s-1").expect("remove");
    store.put("c-3", vec![&[3u8; 10][..]]).expect("50 + 10 of 100 bytes");
    assert_eq!(store.unwritten(), 0);
    assert_eq!(redis.fields(HASH), ["c-3", "paho-mqtt-redis:bytes", "q-2"]);
    let counted: u64 = redis.connection().hget(HASH, "paho-mqtt-redis:bytes").expect("counter");
    assert_eq!(counted, 60);
    // Replacing a value counts only the difference.
    store.put("q-2", vec![&[2u8; 90][..]]).expect("90 + 10 of 100 bytes");
    let counted: u64 = redis.connection().hget(HASH, "paho-mqtt-redis:bytes").expect("counter");
    assert_eq!(counted, 100);
    store.remove("q-2").expect("remove");
    store.remove("c-3").expect("remove");
    assert!(redis.fields(HASH).is_empty(), "an empty store leaves no hash behind: {:?}", redis.fields(HASH));
}

#[test]
fn a_zero_budget_is_rejected() {
    let error = RedisPersistence::builder().max_store_bytes(0).build().expect_err("zero budget");
    assert!(error.to_string().contains("max_store_bytes"), "{error}");
}

/// A command record (one per publish) is never refused, because Paho C cannot
/// take that; beyond the budget it waits in memory until there is room.
#[test]
fn a_command_record_beyond_the_budget_waits_in_memory() {
    let redis = RedisServer::start();
    let mut store = budget_store(&redis, 100);
    store.put("s-1", vec![&[1u8; 80][..]]).expect("80 of 100 bytes");
    store.put("c-1", vec![&[9u8; 50][..]]).expect("kept in memory, not refused");
    assert_eq!(store.unwritten(), 1);
    assert_eq!(store.get("c-1").expect("read back from memory"), vec![9u8; 50]);
    assert_eq!(redis.fields(HASH), ["paho-mqtt-redis:bytes", "s-1"]);

    store.remove("s-1").expect("remove frees room");
    store.put("s-2", vec![&[2u8; 10][..]]).expect("the next write takes the waiting record along");
    assert_eq!(store.unwritten(), 0);
    assert_eq!(redis.fields(HASH), ["c-1", "paho-mqtt-redis:bytes", "s-2"]);
}

/// A record waiting in memory and a newer write of the same key go to Redis
/// as one value: the budget counts it once.
#[test]
fn a_newer_write_of_a_waiting_record_supersedes_it() {
    let redis = RedisServer::start();
    let mut store = budget_store(&redis, 100);
    store.put("s-1", vec![&[1u8; 90][..]]).expect("90 of 100 bytes");
    store.put("c-1", vec![&[2u8; 20][..]]).expect("kept in memory: 110 of 100");
    assert_eq!(store.unwritten(), 1);
    store.put("c-1", vec![&[3u8; 5][..]]).expect("95 of 100: only the newer value counts");
    assert_eq!(store.unwritten(), 0);
    let stored: Vec<u8> = redis.connection().hget(HASH, "c-1").expect("HGET");
    assert_eq!(stored, [3u8; 5]);
    let counted: u64 = redis.connection().hget(HASH, "paho-mqtt-redis:bytes").expect("counter");
    assert_eq!(counted, 95);
}

/// A PUBLISH command record as `MQTTAsync_persistCommand` writes it, padded to `len` bytes.
fn publish_command(token: i32, qos: i32, len: usize) -> Vec<u8> {
    let mut record = Vec::new();
    record.extend_from_slice(&3i32.to_ne_bytes());
    record.extend_from_slice(&token.to_ne_bytes());
    record.extend_from_slice(b"t\0");
    let payload = len - 22;
    record.extend_from_slice(&i32::try_from(payload).unwrap().to_ne_bytes());
    record.extend(std::iter::repeat_n(b'p', payload));
    record.extend_from_slice(&qos.to_ne_bytes());
    record.extend_from_slice(&0i32.to_ne_bytes());
    assert_eq!(record.len(), len);
    record
}

/// Paho removes a message's command record (`c-`) and then writes its
/// PUBLISH record (`s-`); the removal rides inside the write's script, so the
/// budget counts the message once, and a refused write removes nothing: the
/// PUBLISH record waits in memory (Paho ignores the result and sends it) and
/// goes with the next write that fits.
#[test]
fn a_command_record_is_removed_only_with_the_write_that_replaces_it() {
    let redis = RedisServer::start();
    let mut store = budget_store(&redis, 100);
    store.put("c-1", vec![&publish_command(1, 1, 60)[..]]).expect("60 of 100 bytes");
    store.get("c-1").expect("Paho reads the command back");
    store.remove("c-1").expect("remove");
    store.put("s-1", vec![&[2u8; 70][..]]).expect("70 of 100: the removed record no longer counts");
    assert_eq!(redis.fields(HASH), ["paho-mqtt-redis:bytes", "s-1"]);
    let counted: u64 = redis.connection().hget(HASH, "paho-mqtt-redis:bytes").expect("counter");
    assert_eq!(counted, 70);

    store.put("c-2", vec![&publish_command(2, 1, 25)[..]]).expect("95 of 100 bytes");
    store.get("c-2").expect("Paho reads the command back");
    store.remove("c-2").expect("remove");
    store.put("s-2", vec![&[4u8; 40][..]]).expect("Paho ignores this result: the record is kept");
    assert_eq!(store.unwritten(), 1, "70 + 40 > 100: s-2 waits in memory");
    assert_eq!(
        redis.fields(HASH),
        ["c-2", "paho-mqtt-redis:bytes", "s-1"],
        "the refused write took nothing away: the message is still in Redis"
    );
    let counted: u64 = redis.connection().hget(HASH, "paho-mqtt-redis:bytes").expect("counter");
    assert_eq!(counted, 95);
    store.remove("s-1").expect("the first message is acknowledged");
    store.put("c-3", vec![&publish_command(3, 1, 25)[..]]).expect("put");
    assert_eq!(store.unwritten(), 0, "s-2 went with the next write");
    assert_eq!(redis.fields(HASH), ["c-3", "paho-mqtt-redis:bytes", "s-2"], "the owed removal rode along");
    let counted: u64 = redis.connection().hget(HASH, "paho-mqtt-redis:bytes").expect("counter");
    assert_eq!(counted, 65);
}

/// Several stores on one Redis each stay within their own budget, even
/// restored from what Redis holds (the count is rebuilt from the values).
#[test]
fn the_budget_counts_records_written_before_it_was_set() {
    let redis = RedisServer::start();
    let () = redis.connection().hset(HASH, "s-1", record_of_70_bytes()).expect("HSET");
    let mut store = budget_store(&redis, 100);
    store.put("q-2", vec![&[0u8; 40][..]]).expect("kept in memory");
    assert_eq!(store.unwritten(), 1, "70 + 40 > 100");
    store.put("q-2", vec![&[0u8; 30][..]]).expect("a newer value");
    assert_eq!(store.unwritten(), 0, "70 + 30 = 100");
}

#[test]
fn redis_at_maxmemory_refuses_a_write_clearly_and_the_record_waits_in_memory() {
    let redis = RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    support::log_capture::install();
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid");
    store.open("dev", "broker:1883").expect("open");
    store.put("s-1", vec![b"before"]).expect("put");
    let filler = redis.fill_to_maxmemory();
    let value = vec![7u8; 64 * 1024];
    store.put("q-2", vec![&value[..]]).expect("Paho carries on: kept in memory");
    assert!(
        logged_here("WARN", &["put of key \"q-2\"", "Redis HSET on `dev:broker:1883` failed", "OOM"]),
        "Redis's reason, and the command it refused, in the log: {:#?}",
        lines_here()
    );
    assert_eq!(store.unwritten(), 1);
    let stored: Vec<String> = redis.connection().hkeys(HASH).expect("HKEYS");
    assert_eq!(stored, ["s-1"], "the refused write wrote nothing");
    assert_eq!(store.get("q-2").expect("served from memory"), value);
    assert_eq!(store.get("s-1").expect("intact"), b"before");
    let () = redis.connection().del(&filler).expect("DEL");
    store.put("c-3", vec![b"after"]).expect("put");
    assert_eq!(store.unwritten(), 0, "the waiting record went with the next write");
    let mut stored: Vec<String> = redis.connection().hkeys(HASH).expect("HKEYS");
    stored.sort();
    assert_eq!(stored, ["c-3", "q-2", "s-1"]);
}

/// With a budget every write is the budget script, and the log names the
/// command Redis refused as sent: `EVALSHA`, not the `HSET` it runs.
#[test]
fn a_refused_budget_write_is_logged_as_the_script_it_is() {
    let redis = RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let mut store = budget_store(&redis, 1 << 30);
    store.put("s-1", vec![b"before"]).expect("put");
    let filler = redis.fill_to_maxmemory();
    store.put("q-2", vec![&[7u8; 64 * 1024][..]]).expect("Paho carries on: kept in memory");
    assert!(
        logged_here("WARN", &["put of key \"q-2\"", "Redis EVALSHA on `dev:broker:1883` failed", "OOM"]),
        "{:#?}",
        lines_here()
    );
    assert!(!logged_here("WARN", &["HSET on"]), "{:#?}", lines_here());
    assert_eq!(store.unwritten(), 1);
    let () = redis.connection().del(&filler).expect("DEL");
}

/// A removal Redis refuses stays owed and goes again on its own: still an
/// `HDEL`, and named so (it was logged as the write script once).
#[test]
fn an_owed_removal_sent_again_is_named_as_sent() {
    let redis = RedisServer::start();
    redis.add_user("no-hdel", "pw", &["~*", "+@all", "-hdel"]);
    support::log_capture::install();
    let url = format!("redis://no-hdel:pw@127.0.0.1:{}/0", redis.port());
    let mut store = RedisPersistence::with_url(&url).expect("valid");
    store.open("dev", "broker:1883").expect("open");
    store.put("s-1", vec![b"x"]).expect("put");
    store.remove("s-1").expect("Paho ignores a failed remove: it stays owed");
    store.close().expect("close sends the owed removal again");
    let lines = lines_here();
    let refusals: Vec<&String> =
        lines.iter().filter(|line| line.to_lowercase().contains("permission")).collect();
    assert!(refusals.len() >= 2, "the removal, then its retry at close: {lines:#?}");
    assert!(
        refusals.iter().all(|line| line.contains("Redis HDEL on `dev:broker:1883` failed")),
        "{refusals:#?}"
    );
}

/// At `maxmemory`, the write that moves a message from its command record to
/// its PUBLISH record is refused whole: Redis refuses a script at its first
/// write, before it removed anything, so the message stays in Redis (as its
/// command record) and the PUBLISH record waits in memory until Redis has room.
#[test]
fn at_maxmemory_a_message_is_never_in_no_record() {
    let redis = RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    support::log_capture::install();
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid");
    store.open("dev", "broker:1883").expect("open");
    store.put("c-1", vec![&publish_command(1, 1, 60)[..]]).expect("a queued message");
    let filler = redis.fill_to_maxmemory();
    let value = vec![7u8; 64 * 1024];
    store.get("c-1").expect("Paho reads the command back");
    store.remove("c-1").expect("and removes it before writing its PUBLISH record");
    store.put("s-1", vec![&value[..]]).expect("Paho ignores this result: the record is kept");
    let held: Vec<String> = redis.connection().hkeys(HASH).expect("HKEYS");
    assert!(held.contains(&"c-1".to_owned()), "the refused write removed nothing");
    assert!(!held.contains(&"s-1".to_owned()));
    assert_eq!(store.unwritten(), 1);
    let () = redis.connection().del(&filler).expect("memory is freed");
    store.put("c-2", vec![&publish_command(2, 1, 60)[..]]).expect("the next write");
    let mut held: Vec<String> = redis.connection().hkeys(HASH).expect("HKEYS");
    held.sort();
    assert_eq!(held, ["c-2", "s-1"], "the PUBLISH record went with it, and the command record left");
    assert_eq!(store.unwritten(), 0);
}

/// A byte count left by a run without a budget is stale (writes without a
/// budget do not keep it): `open` with a budget recounts from the values.
#[test]
fn a_stale_byte_count_is_not_trusted() {
    let redis = RedisServer::start();
    let () = redis.connection().hset(HASH, "s-1", record_of_70_bytes()).expect("HSET");
    let () = redis.connection().hset(HASH, "paho-mqtt-redis:bytes", 3).expect("HSET");
    let mut store = budget_store(&redis, 100);
    let counted: u64 = redis.connection().hget(HASH, "paho-mqtt-redis:bytes").expect("counter");
    assert_eq!(counted, 70, "recounted at open");
    store.put("q-2", vec![&[0u8; 40][..]]).expect("kept in memory");
    assert_eq!(store.unwritten(), 1, "70 + 40 > 100, whatever the old count said");
    store.put("q-2", vec![&[0u8; 30][..]]).expect("a newer value");
    assert_eq!(store.unwritten(), 0, "70 + 30 = 100");
}

#[test]
fn open_fails_clearly_when_the_hash_name_holds_another_type() {
    support::log_capture::install();
    let redis = RedisServer::start();
    let () = redis::cmd("SET")
        .arg("dev:broker:1883")
        .arg("not a hash")
        .query(&mut redis.connection())
        .expect("SET");
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid");
    assert!(store.open("dev", "broker:1883").is_err(), "open on a string key");
    assert!(
        logged_here("WARN", &["open failed", "`dev:broker:1883` holds a string, not a hash"]),
        "a clear reason: {:#?}",
        lines_here()
    );
    assert!(store.put("s-1", vec![b"x"]).is_err(), "nothing works after a failed open");
    let kept: String = redis::cmd("GET").arg("dev:broker:1883").query(&mut redis.connection()).expect("GET");
    assert_eq!(kept, "not a hash", "the other program's key is untouched");
}

/// A record larger than Redis takes is refused before anything is reserved
/// (on a 32-bit device the length alone could wrap); nothing is written.
#[test]
fn a_record_larger_than_redis_takes_is_refused_before_anything_is_allocated() {
    support::log_capture::install();
    let redis = RedisServer::start();
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid");
    store.open("dev", "broker:1883").expect("open");
    let mebibyte = vec![0u8; 1 << 20];
    let buffers: Vec<&[u8]> = vec![&mebibyte[..]; 513];
    assert!(store.put("s-1", buffers).is_err(), "513 MiB");
    assert!(
        logged_here("WARN", &["put of key \"s-1\"", "larger than the 536870912 bytes"]),
        "{:#?}",
        lines_here()
    );
    assert!(redis.fields(HASH).is_empty());
    store.put("s-1", vec![&mebibyte[..]]).expect("1 MiB is fine");
}

/// A valid PUBLISH record of 70 bytes (`open` sets aside what Paho could not restore).
fn record_of_70_bytes() -> Vec<u8> {
    let record = support::records::valid("s-1", &[0u8; 63]);
    assert_eq!(record.len(), 70);
    record
}
