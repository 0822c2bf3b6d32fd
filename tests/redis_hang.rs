//! A hung Redis (SIGSTOP: its sockets stay open, nothing answers) costs each
//! store call one bounded failure, never a stuck Paho thread; once Redis runs
//! again, the store works and what it held is still there.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::RedisServer;

const IO_TIMEOUT: Duration = Duration::from_millis(300);
/// Generous on purpose: this only catches a call that hangs, it does not measure.
const SANITY_BOUND: Duration = Duration::from_secs(3);
const SERVER: &str = "broker:1883";

fn unopened_store(redis: &RedisServer) -> RedisPersistence {
    RedisPersistence::builder()
        .url(redis.url())
        .connect_timeout(IO_TIMEOUT)
        .io_timeout(IO_TIMEOUT)
        .build()
        .expect("valid options")
}

fn store(redis: &RedisServer, client_id: &str) -> RedisPersistence {
    let mut store = unopened_store(redis);
    store.open(client_id, SERVER).expect("open");
    store
}

/// Runs one call against the frozen server and checks that it came back.
fn bounded<T>(what: &str, call: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = call();
    let elapsed = started.elapsed();
    assert!(
        elapsed < SANITY_BOUND,
        "{what} took {elapsed:?} against a hung Redis (io_timeout {IO_TIMEOUT:?})"
    );
    result
}

fn raw_contents(conn: &mut redis::Connection, hash: &str) -> BTreeMap<String, Vec<u8>> {
    conn.hgetall(hash).expect("HGETALL")
}

fn connected_clients(conn: &mut redis::Connection) -> usize {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(conn).expect("CLIENT LIST");
    list.lines().count()
}

#[test]
fn every_call_returns_within_the_timeout_and_work_resumes_after_sigcont() {
    support::init_logging();
    let redis = RedisServer::start();
    let mut admin = redis.connection();
    let mut main = store(&redis, "hung");
    // `clear` gets its own hash: a timed-out command may still run once Redis resumes.
    let mut other = store(&redis, "hung-other");
    main.put("s-1", vec![b"kept"]).expect("put");
    main.put("s-2", vec![b"removed while hung"]).expect("put");
    other.put("s-1", vec![b"cleared while hung"]).expect("put");

    let frozen = redis.freeze();
    // A queue record waits in memory (Paho ignores the result and keeps the message).
    bounded("put", || main.put("q-3", vec![b"written while hung"])).expect("kept in memory");
    assert!(bounded("get", || main.get("s-1")).is_err(), "get");
    assert!(bounded("clear", || other.clear()).is_err(), "clear");
    // What the store can answer or do without Redis, it does (see RedisPersistence's docs).
    bounded("remove", || main.remove("s-2")).expect("a remove succeeds locally; its HDEL is owed");
    bounded("put of a command record", || main.put("c-9", vec![b"queued while hung"]))
        .expect("a command record is kept in memory, never refused");
    assert_eq!(bounded("keys", || main.keys()).expect("keys from the index"), ["c-9", "q-3", "s-1"]);
    assert!(bounded("contains", || main.monitor().contains("s-1")).expect("contains from the index"));
    assert!(!bounded("contains_key", || main.contains_key("s-1")), "present (inverted for Paho C)");
    frozen.thaw();

    // Once the store has heard from Redis again (its probe PINGs it), calls work.
    assert!(support::wait_until(Duration::from_secs(5), || main.get("s-1").is_ok()), "get after SIGCONT");
    assert_eq!(main.get("s-1").expect("get"), b"kept");
    // The connections given up during the hang close once Redis reads them;
    // after that, nothing from the hang can still change the data.
    assert!(
        support::wait_until(Duration::from_secs(10), || connected_clients(&mut admin) == 4),
        "only the admin, the store's new connection and both stores' lease connections remain"
    );
    let hash = main.hash_name().expect("open");
    let raw = raw_contents(&mut admin, &hash);
    eprintln!("after the hang Redis holds {:?}", raw.keys().collect::<Vec<_>>());
    assert_eq!(raw.get("s-1").map(Vec::as_slice), Some(b"kept".as_slice()), "data written before the hang");
    // A timed-out write has an unknown outcome (Redis may run it after resuming),
    // but the store must answer exactly what Redis holds.
    let mut keys = main.keys().expect("keys");
    keys.sort();
    assert_eq!(keys, raw.keys().cloned().collect::<Vec<_>>(), "keys agree with Redis");
    for (key, value) in &raw {
        assert_eq!(&main.get(key).expect("get"), value, "value of {key}");
        assert!(main.monitor().contains(key).expect("contains"), "contains {key}");
    }
    main.put("s-4", vec![b"after"]).expect("put after the hang");
    assert_eq!(main.get("s-4").expect("get"), b"after");
    // The second store hears from Redis through its own probe; its timed-out
    // `clear` may have run late, and it converges on what Redis holds.
    let other_hash = other.hash_name().expect("open");
    let agrees = support::wait_until(Duration::from_secs(5), || {
        let other_keys = other.keys().expect("keys");
        other_keys == raw_contents(&mut admin, &other_hash).keys().cloned().collect::<Vec<_>>()
    });
    assert!(agrees, "second store agrees with Redis");
}

#[test]
fn a_hung_redis_at_open_fails_open_within_the_timeout() {
    let redis = RedisServer::start();
    let mut store = unopened_store(&redis);
    let frozen = redis.freeze();
    // `open` reads the whole hash (Paho's restore is served from it), so a hung
    // Redis fails it, within the timeouts.
    let opened = bounded("open", || store.open("hung-open", SERVER));
    frozen.thaw();
    assert!(opened.is_err(), "open against a hung Redis");
    // Once the store has heard from Redis again (its probe PINGs it).
    assert!(
        support::wait_until(Duration::from_secs(5), || store.open("hung-open", SERVER).is_ok()),
        "open after SIGCONT"
    );
    store.put("s-1", vec![b"x"]).expect("put after SIGCONT");
    assert_eq!(store.get("s-1").expect("get"), b"x");
}

/// Paho C's order when it sends a queued publish: remove the command record
/// (`c-`), write the PUBLISH record (`s-`), send the packet, whatever that
/// write returned. When the write times out, the message must still end up
/// in Redis, under its PUBLISH record, and the command record must go.
#[test]
fn a_publish_record_whose_write_timed_out_still_reaches_redis() {
    support::init_logging();
    let redis = RedisServer::start();
    let mut admin = redis.connection();
    let mut store = store(&redis, "hung-handoff");
    let hash = store.hash_name().expect("open");
    store.put("c-1", vec![b"queued publish"]).expect("put");
    store.remove("c-1").expect("Paho removes the command record first");

    let frozen = redis.freeze();
    bounded("put", || store.put("s-1", vec![b"in flight"]))
        .expect("kept in memory: Paho sends the PUBLISH whatever the put returns");
    frozen.thaw();
    assert_eq!(store.unwritten(), 1, "the PUBLISH record waits for Redis");

    // The next write once the store has heard from Redis again (its probe PINGs it).
    let written = support::wait_until(Duration::from_secs(5), || {
        store.put("c-2", vec![b"next publish"]).is_ok() && store.unwritten() == 0
    });
    assert!(written, "the PUBLISH record went with the next write");
    // The connection given up during the hang may still run its commands once
    // Redis reads them; all of them converge on the same contents.
    assert!(
        support::wait_until(Duration::from_secs(10), || connected_clients(&mut admin) == 3),
        "only the admin, the store's new connection and its lease's remain"
    );
    let raw = raw_contents(&mut admin, &hash);
    assert_eq!(raw.keys().collect::<Vec<_>>(), ["c-2", "s-1"], "the message is in Redis, once");
    assert_eq!(raw.get("s-1").map(Vec::as_slice), Some(b"in flight".as_slice()));
    assert_eq!(store.keys().expect("keys"), ["c-2", "s-1"], "the index agrees");
}

/// redis-rs connects Unix sockets with a blocking `connect`, which waits for
/// as long as a hung Redis's accept backlog is full; the store's own connect
/// gives up after `connect_timeout`.
#[cfg(feature = "unix-socket")]
#[test]
fn a_hung_redis_with_a_full_accept_backlog_fails_open_within_the_connect_timeout() {
    let redis = RedisServer::start_with(&["--tcp-backlog", "1"]);
    let frozen = redis.freeze();
    let address = socket2::SockAddr::unix(redis.socket_path()).expect("a socket address");
    // Connections the frozen Redis never accepts, until the kernel refuses more.
    let mut queued = Vec::new();
    let full = (0..1000).any(|_| {
        let socket =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).expect("a socket");
        socket.set_nonblocking(true).expect("non-blocking");
        let refused = socket.connect(&address).is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock);
        queued.push(socket);
        refused
    });
    assert!(full, "the accept backlog filled up");
    let mut store = RedisPersistence::builder()
        .url(redis.unix_url())
        .connect_timeout(IO_TIMEOUT)
        .io_timeout(IO_TIMEOUT)
        .build()
        .expect("valid options");
    let opened = bounded("open", || store.open("full-backlog", SERVER));
    let timeouts = store.stats().timeouts;
    drop(queued);
    frozen.thaw();
    assert!(opened.is_err(), "open against a hung Redis with a full backlog");
    assert_eq!(timeouts, 1, "the connect timed out, once");
}
