//! Over the Unix socket, a write that also removes fields (Paho's PUBLISH
//! record replacing its command record) goes as `MULTI`, `HSET`, `HDEL`,
//! `EXEC` instead of the write-and-remove script, and is as much all or
//! nothing: a Redis at `maxmemory` refuses it whole (`EXECABORT`), and a
//! transaction whose commands fail inside `EXEC` is a refusal too. A Redis
//! whose ACL refuses `MULTI` gets the script. Counted with `INFO
//! commandstats`; over TCP, `tests/command_counts.rs` counts the script.

#![cfg(feature = "unix-socket")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::log_capture::{lines_here, logged_here};
use support::RedisServer;

const HASH: &str = "dev:broker:1883";
const WAIT: Duration = Duration::from_secs(5);

/// A store whose lease is not renewed while a test runs: Redis's command
/// counts then hold only the store's own commands until `close` (which
/// releases the lease with a script).
fn store(url: &str) -> RedisPersistence {
    let mut store =
        RedisPersistence::builder().url(url).lease(Duration::from_secs(600)).build().expect("valid");
    store.open("dev", "broker:1883").expect("open");
    store
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(name, calls)| ((*name).to_owned(), *calls)).collect()
}

/// A PUBLISH command record as `MQTTAsync_persistCommand` writes it, for
/// message `token`: the store reads it to tie its removal to the PUBLISH
/// record's write (as in `tests/redis_refusals.rs`).
fn publish_command(token: i32) -> Vec<u8> {
    let mut record = Vec::new();
    record.extend_from_slice(&3i32.to_ne_bytes());
    record.extend_from_slice(&token.to_ne_bytes());
    record.extend_from_slice(b"t\0");
    let payload = 38;
    record.extend_from_slice(&i32::try_from(payload).unwrap().to_ne_bytes());
    record.extend(std::iter::repeat_n(b'p', payload));
    record.extend_from_slice(&1i32.to_ne_bytes());
    record.extend_from_slice(&0i32.to_ne_bytes());
    record
}

/// What Paho stores for one online QoS 1 message: its command record, read
/// back; the command record's removal, then its PUBLISH record (the removal
/// rides on that write); the PUBLISH record's removal once acknowledged.
fn one_message(store: &mut RedisPersistence, n: i32) {
    store.put(&format!("c-{n}"), vec![&publish_command(n)[..]]).expect("put command");
    store.get(&format!("c-{n}")).expect("read back");
    store.remove(&format!("c-{n}")).expect("remove command");
    store.put(&format!("s-{n}"), vec![b"publish".as_slice()]).expect("put publish");
    store.remove(&format!("s-{n}")).expect("remove publish");
}

/// Until the store's replies came in: `get` answers from memory here, and
/// takes in what Redis answered first.
fn until_answered(store: &mut RedisPersistence, condition: impl Fn(&RedisPersistence) -> bool) -> bool {
    support::wait_until(WAIT, || {
        let _ = store.get("s-1");
        condition(store)
    })
}

#[test]
fn a_write_that_removes_fields_is_a_transaction() {
    let redis = RedisServer::start();
    let mut store = store(&redis.unix_url());
    one_message(&mut store, 1);
    // The handshake asked MULTI and EXEC once; the first message ran.
    let ran = support::wait_until(WAIT, || redis.command_counts().get("exec") == Some(&2));
    assert!(ran, "{:?}", redis.command_counts());
    redis.reset_command_counts();
    let messages = 50;
    for n in 2..2 + messages {
        one_message(&mut store, n);
    }
    let written = support::wait_until(WAIT, || redis.connection().hlen::<_, usize>(HASH).ok() == Some(0));
    assert!(written, "every record went");
    let mut seen = redis.command_counts();
    seen.remove("hlen"); // the test's own
    assert_eq!(
        seen,
        counts(&[("exec", 50), ("hdel", 2 * 50), ("hset", 2 * 50), ("multi", 50)]),
        "per message: HSET; MULTI, HSET, HDEL, EXEC; HDEL"
    );
    assert_eq!(redis.connection().hlen::<_, usize>(HASH).ok(), Some(0), "every record went");
    assert_eq!(store.stats().errors, 0);
}

/// At `maxmemory` Redis refuses the queued `HSET` (`-OOM`) and then the
/// whole transaction (`-EXECABORT`): the command record stays in Redis, the
/// PUBLISH record waits in memory, and goes once Redis has room.
#[test]
fn at_maxmemory_the_transaction_is_refused_whole() {
    let redis = RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    support::log_capture::install();
    let mut store = store(&redis.unix_url());
    store.put("c-1", vec![&publish_command(1)[..]]).expect("a queued message");
    assert!(support::wait_until(WAIT, || redis.fields(HASH) == ["c-1"]));
    let filler = redis.fill_to_maxmemory();
    let value = vec![7u8; 64 * 1024];
    store.get("c-1").expect("Paho reads the command back");
    store.remove("c-1").expect("and removes it before writing its PUBLISH record");
    store.put("s-1", vec![&value[..]]).expect("Paho ignores this result: the record is kept");
    let refused = until_answered(&mut store, |_| logged_here("WARN", &["put of key \"s-1\"", "OOM"]));
    assert!(refused, "the refusal came in:{:#?}", lines_here());
    assert_eq!(redis.fields(HASH), ["c-1"], "the refused transaction removed nothing");
    let () = redis.connection().del(&filler).expect("memory is freed");
    store.put("c-2", vec![&publish_command(2)[..]]).expect("the next write");
    let written =
        until_answered(&mut store, |store| store.unwritten() == 0 && redis.fields(HASH) == ["c-2", "s-1"]);
    assert!(
        written,
        "the PUBLISH record went with the next write, and the command record left: {:?}",
        redis.fields(HASH)
    );
}

/// `HSET` and `HDEL` of a hash that became a string fail inside `EXEC`
/// (`-WRONGTYPE` in its array, not when queued): a refusal as well, and
/// the string is untouched.
#[test]
fn an_error_inside_exec_is_a_refusal() {
    let redis = RedisServer::start();
    support::log_capture::install();
    let mut store = store(&redis.unix_url());
    store.put("c-1", vec![&publish_command(1)[..]]).expect("put");
    assert!(support::wait_until(WAIT, || redis.fields(HASH) == ["c-1"]));
    let mut admin = redis.connection();
    let () = admin.del(HASH).expect("DEL");
    let () = admin.set(HASH, "not a hash").expect("SET");
    store.get("c-1").expect("from memory");
    store.remove("c-1").expect("remove");
    store.put("s-1", vec![b"publish".as_slice()]).expect("Paho ignores this result: the record is kept");
    let refused = until_answered(&mut store, |_| logged_here("WARN", &["put of key \"s-1\"", "WRONGTYPE"]));
    assert!(refused, "the refusal came in:{:#?}", lines_here());
    assert!(store.get("s-1").is_ok(), "the record is kept in memory");
    let kept: String = admin.get(HASH).expect("GET");
    assert_eq!(kept, "not a hash");
}

/// An ACL that refuses `MULTI` (as the README's least-privilege one does):
/// the handshake finds out, and such writes run as the script, every record
/// reaching Redis.
#[test]
fn without_multi_a_write_that_removes_fields_is_the_script() {
    let redis = RedisServer::start();
    redis.add_user("no-multi", "pw", &["~*", "+@all", "-multi"]);
    let mut store = store(&format!("{}?user=no-multi&pass=pw", redis.unix_url()));
    one_message(&mut store, 1);
    let ran = support::wait_until(WAIT, || redis.command_counts().get("evalsha") == Some(&1));
    assert!(ran, "{:?}", redis.command_counts());
    redis.reset_command_counts();
    for n in 2..7 {
        one_message(&mut store, n);
    }
    let written = support::wait_until(WAIT, || redis.connection().hlen::<_, usize>(HASH).ok() == Some(0));
    assert!(written, "every record went");
    let mut seen = redis.command_counts();
    seen.remove("hlen"); // the test's own
    assert_eq!(seen, counts(&[("evalsha", 5), ("hdel", 2 * 5), ("hset", 2 * 5)]));
    assert_eq!(redis.connection().hlen::<_, usize>(HASH).ok(), Some(0), "every record went");
    assert_eq!(store.stats().errors, 0);
}
