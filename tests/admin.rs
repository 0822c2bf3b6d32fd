//! `paho_mqtt_redis::admin` against a real redis-server: the stores a
//! `RedisPersistence` wrote, found, measured, read and purged through the
//! same configuration; and the errors a caller can act on.

mod support;

use std::time::Duration;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::admin::{Size, Stores};
use paho_mqtt_redis::{Error, RedisPersistence};
use support::RedisServer;

#[test]
fn the_stores_a_persistence_wrote_are_found_measured_read_and_purged() {
    let redis = RedisServer::start();
    let builder = || RedisPersistence::builder().url(redis.url()).key_prefix("mqtt:").max_store_bytes(10_000);
    for (client_id, records) in [("gw:1", 2), ("gw", 1)] {
        let mut store = builder().build().expect("valid");
        store.open(client_id, "10.0.0.1:1883").expect("open");
        for n in 0..records {
            store.put(&format!("s-{n}"), vec![b"abc".as_slice(), b"de".as_slice()]).expect("put");
        }
        store.close().expect("close");
    }
    // Not under the prefix: never listed.
    let mut other = RedisPersistence::with_url(&redis.url()).expect("valid");
    other.open("gw", "10.0.0.1:1883").expect("open");
    other.put("s-1", vec![b"x".as_slice()]).expect("put");

    let config = builder().into_config().expect("valid");
    let mut stores = Stores::connect(&config).expect("connect");
    let all = stores.list(None).expect("list");
    let names: Vec<(&str, &str, &str)> =
        all.iter().map(|s| (s.client_id.as_str(), s.server.as_str(), s.hash.as_str())).collect();
    assert_eq!(
        names,
        [
            ("gw", "10.0.0.1:1883", "mqtt:gw:10.0.0.1:1883"),
            ("gw:1", "10.0.0.1:1883", "mqtt:gw:1:10.0.0.1:1883")
        ]
    );
    let gw1 = stores.list(Some("gw:1")).expect("list");
    assert_eq!(gw1.len(), 1);
    let size = stores.size(&gw1[0]).expect("size");
    assert_eq!(
        size.map(|Size { records, bytes, .. }| (records, bytes)),
        Some((2, 10)),
        "the byte count is no record"
    );
    let mut records = stores.records(&gw1[0]).expect("records");
    records.sort();
    assert_eq!(records, [("s-0".to_owned(), b"abcde".to_vec()), ("s-1".to_owned(), b"abcde".to_vec())]);

    let found = stores.find("gw", "tcp://10.0.0.1:1883").expect("find");
    assert_eq!(found.as_ref().map(|s| s.hash.as_str()), Some("mqtt:gw:10.0.0.1:1883"));
    assert_eq!(stores.find("nobody", "10.0.0.1:1883").expect("find"), None);
    assert_eq!(stores.purge("gw", "tcp://10.0.0.1:1883").expect("purge"), Some(1));
    assert_eq!(stores.purge("gw", "10.0.0.1:1883").expect("purge"), None, "already gone");
    assert_eq!(stores.list(None).expect("list").len(), 1);
    assert_eq!(other.keys().expect("keys"), ["s-1"], "the store without the prefix is untouched");
}

#[test]
fn a_refused_connection_keeps_its_cause_and_never_the_password() {
    let redis = RedisServer::start();
    redis.require_password("right-pw");
    let url = format!("redis://:wrong-pw@127.0.0.1:{}/0", redis.port());
    let config = RedisPersistence::builder().url(url).into_config().expect("valid");
    let error = Stores::connect(&config).expect_err("a wrong password");
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(!error.is_timeout());
    let source = std::error::Error::source(&error).expect("the cause is kept");
    assert!(source.downcast_ref::<redis::RedisError>().is_some());
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("wrong-pw") && !shown.contains("right-pw"), "{shown}");
}

#[test]
fn a_refused_command_tells_its_redis_code() {
    let redis = RedisServer::start();
    redis.add_user("no-scan", "scan-pw", &["~*", "+@all", "-scan"]);
    let url = format!("redis://no-scan:scan-pw@127.0.0.1:{}/0", redis.port());
    let config = RedisPersistence::builder().url(url).into_config().expect("valid");
    let error = Stores::connect(&config).expect("connect").list(None).expect_err("SCAN is not allowed");
    assert!(matches!(error, Error::Command { command: "SCAN", .. }), "{error:?}");
    assert_eq!(error.redis_code(), Some("NOPERM"), "{error}");
    assert!(!error.is_timeout());
}

#[test]
fn a_hung_redis_is_a_timeout() {
    let redis = RedisServer::start();
    let config = RedisPersistence::builder()
        .url(redis.url())
        .io_timeout(Duration::from_millis(200))
        .into_config()
        .expect("valid");
    let mut stores = Stores::connect(&config).expect("connect");
    let frozen = redis.freeze();
    let error = stores.list(None).expect_err("no answer");
    frozen.thaw();
    assert!(error.is_timeout(), "{error:?}");
    assert!(matches!(error, Error::Command { command: "SCAN", .. }), "{error:?}");
    assert_eq!(error.redis_code(), None);
}

/// A key under a store's name that is not a hash is reported, never
/// deleted; a hash with fields that are not Paho keys, or not UTF-8, is
/// measured by its records only.
#[test]
fn what_is_not_a_store_is_reported_and_left_alone() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    redis::cmd("SET").arg("gw:10.0.0.1:1883").arg("someone else's").query::<()>(&mut conn).expect("SET");
    redis::cmd("HSET")
        .arg("odd:10.0.0.1:1883")
        .arg(b"s-1".as_slice())
        .arg(b"12345".as_slice())
        .arg(b"\xff\xfe".as_slice())
        .arg(b"not UTF-8".as_slice())
        .arg(b"note".as_slice())
        .arg(b"not a Paho key".as_slice())
        .query::<()>(&mut conn)
        .expect("HSET");

    let config = RedisPersistence::builder().url(redis.url()).into_config().expect("valid");
    let mut stores = Stores::connect(&config).expect("connect");
    let error = stores.find("gw", "10.0.0.1:1883").expect_err("a string");
    assert!(matches!(&error, Error::NotAHash { found, .. } if found == "string"), "{error:?}");
    let error = stores.purge("gw", "10.0.0.1:1883").expect_err("a string");
    assert!(matches!(&error, Error::NotAHash { .. }), "{error:?}");
    let kept: String = redis::cmd("GET").arg("gw:10.0.0.1:1883").query(&mut conn).expect("GET");
    assert_eq!(kept, "someone else's", "nothing deleted");

    let listed = stores.list(None).expect("list");
    assert_eq!(listed.iter().map(|s| s.hash.as_str()).collect::<Vec<_>>(), ["odd:10.0.0.1:1883"]);
    let size = stores.size(&listed[0]).expect("size").expect("one Paho record");
    assert_eq!((size.records, size.bytes), (1, 5));
    assert_eq!(stores.records(&listed[0]).expect("records").len(), 3, "every field is shown");
    assert_eq!(stores.purge("odd", "10.0.0.1:1883").expect("purge"), Some(1), "one record");
}

/// A quarantine as `open` leaves it (`{hash}:quarantine`, entries
/// `{key}@{ms}` and their reasons `{entry}#reason`), written here by hand:
/// which records `open` sets aside is the check's to decide.
fn quarantine(conn: &mut redis::Connection, hash: &str, entries: &[(&str, &[u8], &str)]) {
    for (entry, value, reason) in entries {
        redis::cmd("HSET")
            .arg(format!("{hash}:quarantine"))
            .arg(*entry)
            .arg(*value)
            .arg(format!("{entry}#reason"))
            .arg(*reason)
            .query::<()>(conn)
            .expect("HSET");
    }
}

#[test]
fn a_quarantine_is_listed_read_put_back_and_purged() {
    let redis = RedisServer::start();
    let builder = || RedisPersistence::builder().url(redis.url()).key_prefix("mqtt:");
    let mut store = builder().max_store_bytes(10_000).build().expect("valid");
    store.open("gw", "10.0.0.1:1883").expect("open");
    store.put("s-1", vec![b"abc".as_slice()]).expect("put");
    store.close().expect("close");
    let hash = "mqtt:gw:10.0.0.1:1883";
    let mut conn = redis.connection();
    quarantine(
        &mut conn,
        hash,
        &[
            ("s-2@1733548800000", b"", "empty record"),
            ("c-3@1733548800001", b"\xff\x00garbage", "not a command"),
            ("s-1@1733548800002", b"old", "truncated PUBLISH"),
        ],
    );
    // A lease's key beside it (a string) and the quarantine (a hash): no stores.
    redis::cmd("SET").arg(format!("{hash}:owner")).arg("host 1 0").query::<()>(&mut conn).expect("SET");

    let mut stores = Stores::connect(&builder().into_config().expect("valid")).expect("connect");
    let listed = stores.list(None).expect("list");
    assert_eq!(listed.iter().map(|s| s.hash.as_str()).collect::<Vec<_>>(), [hash]);

    let gw = stores.named("gw", "tcp://10.0.0.1:1883");
    let entries = stores.quarantine(&gw).expect("quarantine");
    let summary: Vec<(&str, &str, usize, &str)> = entries
        .iter()
        .map(|e| (e.entry.as_str(), e.key.as_str(), e.value.len(), e.reason.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("s-2@1733548800000", "s-2", 0, "empty record"),
            ("c-3@1733548800001", "c-3", 9, "not a command"),
            ("s-1@1733548800002", "s-1", 3, "truncated PUBLISH"),
        ]
    );
    let at = entries[1].at.duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    assert_eq!(at, Duration::from_millis(1_733_548_800_001));
    let one = stores.quarantined(&gw, "c-3@1733548800001").expect("read").expect("found");
    assert_eq!(one.value, b"\xff\x00garbage", "the exact bytes");
    assert_eq!(stores.quarantined(&gw, "c-3@1").expect("read"), None);

    // Owned: refused, nothing changed.
    let refused = stores.put_back(&gw, "s-2@1733548800000");
    assert!(
        matches!(&refused, Err(Error::PutBackRefused { why, .. }) if why.contains("open")),
        "{refused:?}"
    );
    redis::cmd("DEL").arg(format!("{hash}:owner")).query::<()>(&mut conn).expect("DEL");
    // The store holds s-1: refused.
    let refused = stores.put_back(&gw, "s-1@1733548800002");
    assert!(matches!(&refused, Err(Error::PutBackRefused { why, .. }) if why.contains("s-1")), "{refused:?}");
    let refused = stores.put_back(&gw, "s-9@1");
    assert!(matches!(&refused, Err(Error::PutBackRefused { .. })), "{refused:?}");
    assert_eq!(stores.quarantine(&gw).expect("quarantine").len(), 3, "nothing changed");

    stores.put_back(&gw, "c-3@1733548800001").expect("put back");
    let found = stores.find("gw", "10.0.0.1:1883").expect("find").expect("a store");
    let mut records = stores.records(&found).expect("records");
    records.sort();
    assert_eq!(
        records,
        [("c-3".to_owned(), b"\xff\x00garbage".to_vec()), ("s-1".to_owned(), b"abc".to_vec())]
    );
    let count: String = redis::cmd("HGET")
        .arg(hash)
        .arg(paho_mqtt_redis::admin::BUDGET_COUNTER_FIELD)
        .query(&mut conn)
        .expect("HGET");
    assert_eq!(count, "12", "the budget's byte count follows");
    let left: Vec<String> =
        stores.quarantine(&gw).expect("quarantine").into_iter().map(|e| e.entry).collect();
    assert_eq!(left, ["s-2@1733548800000", "s-1@1733548800002"]);

    assert_eq!(stores.purge_quarantine(&gw, Some("s-2@1733548800000")).expect("purge one"), 1);
    assert_eq!(stores.purge_quarantine(&gw, Some("s-2@1733548800000")).expect("purge one"), 0);
    assert_eq!(stores.purge_quarantine(&gw, None).expect("purge all"), 1);
    assert!(stores.quarantine(&gw).expect("quarantine").is_empty());
    let exists: bool =
        redis::cmd("EXISTS").arg(format!("{hash}:quarantine")).query(&mut conn).expect("EXISTS");
    assert!(!exists);
}
