//! Stores sharing one Redis stay apart: what one writes, removes or clears
//! never touches another's records.

mod support;

use std::collections::BTreeMap;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::RedisServer;

const SERVER: &str = "127.0.0.1:1883";

fn store(url: &str, prefix: &str, client_id: &str, server: &str) -> RedisPersistence {
    let mut store = RedisPersistence::builder().url(url).key_prefix(prefix).build().expect("valid options");
    store.open(client_id, server).expect("open");
    store
}

/// Every hash in the Redis database behind `url`: hash name -> field -> value
/// (the stores' leases, strings, are not records).
fn everything(url: &str) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let mut conn = redis::Client::open(url).and_then(|c| c.get_connection()).expect("connect");
    let names: Vec<String> = conn.keys("*").expect("KEYS");
    let hashes: Vec<String> = names
        .into_iter()
        .filter(|name| redis::cmd("TYPE").arg(name).query::<String>(&mut conn).is_ok_and(|t| t == "hash"))
        .collect();
    hashes.into_iter().map(|name| (name.clone(), conn.hgetall(&name).expect("HGETALL"))).collect()
}

/// Runs a full life on `a` while checking after every step that `b`'s records are untouched.
fn a_never_touches_b(a: &mut RedisPersistence, b: &mut RedisPersistence, b_url: &str) {
    b.put("s-1", vec![b"b's publish"]).expect("put b");
    b.put("sc-1", vec![b"b's pubrel"]).expect("put b");
    b.put("c-1", vec![b"b's command"]).expect("put b");
    let b_hash = b.hash_name().expect("b is open");
    let b_before = everything(b_url).remove(&b_hash).expect("b's hash exists");
    let check_b = |step: &str, b: &mut RedisPersistence| {
        let b_now = everything(b_url).remove(&b_hash).unwrap_or_default();
        assert_eq!(b_now, b_before, "after {step} on a, b's hash changed");
        let mut keys = b.keys().expect("keys of b");
        keys.sort();
        assert_eq!(keys, ["c-1", "s-1", "sc-1"], "after {step} on a, b's keys changed");
        assert_eq!(b.get("s-1").expect("get b"), b"b's publish", "after {step} on a");
    };

    a.put("s-1", vec![b"a's publish"]).expect("put a");
    a.put("c-1", vec![b"a's command"]).expect("put a");
    check_b("put", b);
    assert_eq!(a.get("s-1").expect("get a"), b"a's publish", "a sees its own value, not b's");
    a.remove("s-1").expect("remove a");
    a.remove("sc-1").expect("remove of a key only b has");
    check_b("remove", b);
    assert_eq!(a.keys().expect("keys a"), ["c-1"], "a sees only its own keys");
    assert!(!a.monitor().contains("sc-1").expect("contains a"), "b's key is not a's");
    a.clear().expect("clear a");
    check_b("clear", b);
    assert!(a.keys().expect("keys a").is_empty());
    a.close().expect("close a");
    check_b("close", b);
}

#[test]
fn different_client_ids_on_one_redis_stay_apart() {
    let redis = RedisServer::start();
    let mut a = store(&redis.url(), "", "gateway-a", SERVER);
    let mut b = store(&redis.url(), "", "gateway-b", SERVER);
    a_never_touches_b(&mut a, &mut b, &redis.url());
}

#[test]
fn one_client_id_under_different_prefixes_stays_apart() {
    let redis = RedisServer::start();
    let mut a = store(&redis.url(), "app-a:", "gateway", SERVER);
    let mut b = store(&redis.url(), "app-b:", "gateway", SERVER);
    a_never_touches_b(&mut a, &mut b, &redis.url());
}

#[test]
fn one_client_id_with_and_without_a_prefix_stays_apart() {
    let redis = RedisServer::start();
    let mut a = store(&redis.url(), "mqtt:", "gateway", SERVER);
    let mut b = store(&redis.url(), "", "gateway", SERVER);
    a_never_touches_b(&mut a, &mut b, &redis.url());
}

#[test]
fn one_client_id_on_two_brokers_stays_apart() {
    let redis = RedisServer::start();
    let mut a = store(&redis.url(), "", "gateway", "127.0.0.1:1883");
    let mut b = store(&redis.url(), "", "gateway", "127.0.0.1:8883");
    a_never_touches_b(&mut a, &mut b, &redis.url());
}

#[test]
fn one_client_id_in_two_databases_stays_apart() {
    let redis = RedisServer::start();
    let db1 = format!("redis://127.0.0.1:{}/1", redis.port());
    let mut a = store(&redis.url(), "", "gateway", SERVER);
    let mut b = store(&db1, "", "gateway", SERVER);
    assert_eq!(a.hash_name(), b.hash_name(), "the same hash name, kept apart by the database alone");
    a_never_touches_b(&mut a, &mut b, &db1);
    assert!(everything(&redis.url()).is_empty(), "a cleared its hash in database 0");
}
