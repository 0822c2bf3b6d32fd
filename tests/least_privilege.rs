//! The crate works under exactly the least-privilege ACL the deployment guide
//! (`src/guide/deployment.md`) documents,
//! and that ACL really confines it.

mod support;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use support::RedisServer;

const PASSWORD: &str = "acl-test-pw";

/// The `ACL SETUSER` line from the deployment guide, with the test's password.
fn guide_acl_line() -> Vec<String> {
    let guide = include_str!("../src/guide/deployment.md");
    let line = guide
        .lines()
        .find(|l| l.starts_with("ACL SETUSER mqtt "))
        .expect("the deployment guide documents the ACL");
    line.replace(">change-me", &format!(">{PASSWORD}")).split_whitespace().map(str::to_owned).collect()
}

fn redis_with_guide_user() -> RedisServer {
    let redis = RedisServer::start();
    let mut admin = redis.connection();
    let line = guide_acl_line();
    let (command, args) = line.split_first().expect("a command");
    let mut cmd = redis::cmd(command);
    for arg in args {
        cmd.arg(arg);
    }
    let () = cmd.query(&mut admin).expect("the deployment guide's ACL line is valid");
    redis
}

fn store_as_guide_user(redis: &RedisServer, password: &str, prefix: &str) -> RedisPersistence {
    RedisPersistence::builder()
        .url(format!("redis://mqtt:{password}@127.0.0.1:{}/0", redis.port()))
        .key_prefix(prefix)
        .build()
        .expect("valid options")
}

/// Every call reaches Redis under the ACL, over TCP and (with feature
/// `unix-socket`) the Unix socket, with a database other than 0 (`SELECT`).
/// A refused write would not fail its `put` (the record waits in memory), so
/// what Redis holds is checked too.
#[test]
fn every_operation_works_under_the_documented_acl() {
    let redis = redis_with_guide_user();
    let mut urls = vec![
        format!("redis://mqtt:{PASSWORD}@127.0.0.1:{}/0", redis.port()),
        format!("redis://mqtt:{PASSWORD}@127.0.0.1:{}/1", redis.port()),
    ];
    if cfg!(feature = "unix-socket") {
        urls.push(format!("{}?db=1&user=mqtt&pass={PASSWORD}", redis.unix_url()));
    }
    for url in urls {
        let mut store =
            RedisPersistence::builder().url(url.as_str()).key_prefix("mqtt:").build().expect("valid");
        store.open("dev", "broker:1883").expect("open");
        store.put("s-1", vec![b"a", b"b"]).expect("put");
        store.put("c-2", vec![b"c"]).expect("put");
        assert_eq!(store.get("s-1").expect("get"), b"ab");
        store.remove("s-1").expect("remove");
        assert_eq!(store.keys().expect("keys"), ["c-2"]);
        assert!(store.monitor().contains("c-2").expect("contains"));
        assert_eq!(store.unwritten(), 0, "{url}: Redis took every write");
        let mut admin = redis.connection();
        let db = if url.ends_with("/0") { 0 } else { 1 };
        let () = redis::cmd("SELECT").arg(db).query(&mut admin).expect("SELECT");
        let fields: Vec<String> =
            redis::cmd("HKEYS").arg("mqtt:dev:broker:1883").query(&mut admin).expect("HKEYS");
        assert_eq!(fields, ["c-2"], "{url}: what Redis holds");
        store.clear().expect("clear");
        assert!(store.keys().expect("keys").is_empty());
        let fields: Vec<String> =
            redis::cmd("HKEYS").arg("mqtt:dev:broker:1883").query(&mut admin).expect("HKEYS");
        assert!(fields.is_empty(), "{url}: cleared in Redis");
        assert_eq!(store.stats().errors, 0, "{url}");
        store.close().expect("close");
    }
}

/// The lease's paths under the ACL: taken at open (`SET NX`), renewed by
/// its thread (a script: `GET`, `PEXPIRE`), refusing a second store (`GET`,
/// `PTTL`), taken over from a dead owner (a script: `GET`, `SET`), released
/// at close (a script: `GET`, `DEL`). A refused renewal would fence the
/// store, which `lease_lost` and Redis's fields would show.
#[test]
fn the_lease_works_under_the_documented_acl() {
    support::init_logging();
    let redis = redis_with_guide_user();
    let mut urls = vec![format!("redis://mqtt:{PASSWORD}@127.0.0.1:{}/0", redis.port())];
    if cfg!(feature = "unix-socket") {
        urls.push(format!("{}?user=mqtt&pass={PASSWORD}", redis.unix_url()));
    }
    let lease = "mqtt:dev:broker:1883:owner";
    let mut admin = redis.connection();
    // From here on Redis counts only the store's errors (the harness's start-up has some).
    redis.reset_command_counts();
    for url in urls {
        let build = || {
            RedisPersistence::builder()
                .url(url.as_str())
                .key_prefix("mqtt:")
                .lease(std::time::Duration::from_millis(300))
                .build()
                .expect("valid")
        };
        // A dead owner's lease on this host: taken over at once.
        let () = redis::cmd("SET")
            .arg(lease)
            .arg(support::lease_value(support::unused_pid(), None))
            .arg("PX")
            .arg(60_000)
            .query(&mut admin)
            .expect("SET");
        let mut store = build();
        store.open("dev", "broker:1883").expect("open takes a dead owner's lease");

        let held: String = redis::cmd("GET").arg(lease).query(&mut admin).expect("GET");
        assert!(held.contains(&format!("pid={}", std::process::id())), "{url}: {held}");
        // Several renewals (every 100 ms).
        std::thread::sleep(std::time::Duration::from_millis(700));
        store.put("c-1", vec![b"x"]).expect("put");
        assert_eq!(store.unwritten(), 0, "{url}: the lease was renewed, the write went");
        assert_eq!(store.stats().lease_lost, 0, "{url}");
        let mut second = build();
        assert!(second.open("dev", "broker:1883").is_err(), "{url}: the store is in use");
        store.clear().expect("clear");
        store.close().expect("close");
        let gone: Option<String> = redis::cmd("GET").arg(lease).query(&mut admin).expect("GET");
        assert_eq!(gone, None, "{url}: released at close");
    }
    // A refused renewal leaves the lease to expire and be taken again, which
    // the store survives: Redis's own count of refusals tells it.
    let errors: String = redis::cmd("INFO").arg("errorstats").query(&mut admin).expect("INFO errorstats");
    // (`NOSCRIPT` is a script's first EVALSHA on a Redis that does not know it yet.)
    let refused: Vec<&str> = errors
        .lines()
        .filter(|l| l.starts_with("errorstat_") && !l.starts_with("errorstat_NOSCRIPT"))
        .collect();
    assert!(refused.is_empty(), "Redis refused commands of the lease: {refused:?}");
}

#[test]
fn the_store_budget_works_under_the_documented_acl() {
    let redis = redis_with_guide_user();
    let mut store = RedisPersistence::builder()
        .url(format!("redis://mqtt:{PASSWORD}@127.0.0.1:{}/0", redis.port()))
        .key_prefix("mqtt:")
        .max_store_bytes(10)
        .build()
        .expect("valid options");
    store.open("dev", "broker:1883").expect("open");
    store.put("s-1", vec![b"12345"]).expect("put within the budget");
    store.put("q-2", vec![b"123456"]).expect("beyond the budget: kept in memory");
    assert_eq!(store.unwritten(), 1);
    store.remove("s-1").expect("remove");
    store.put("c-3", vec![b"c"]).expect("the next write takes q-2 along");
    assert_eq!(store.unwritten(), 0);
    assert_eq!(store.keys().expect("keys"), ["c-3", "q-2"]);
}

#[test]
fn the_acl_confines_the_store_to_its_prefix() {
    let redis = redis_with_guide_user();
    let mut store = store_as_guide_user(&redis, PASSWORD, "other:");
    // `open` reads the hash, so a hash outside ~mqtt:* is refused right there.
    assert!(store.open("dev", "broker:1883").is_err(), "a hash outside ~mqtt:* must be refused");
    assert!(store.put("s-1", vec![b"x"]).is_err(), "nothing can be written after a failed open");
}

#[test]
fn a_wrong_password_fails_open() {
    let redis = redis_with_guide_user();
    let mut store = store_as_guide_user(&redis, "wrong-password", "mqtt:");
    assert!(store.open("dev", "broker:1883").is_err());
}
