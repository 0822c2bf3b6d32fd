//! Paho's persistence contract (`MQTTClientPersistence.h`), checked against
//! the in-memory reference model and against a real Redis over TCP and a Unix socket.
//!
//! Every backend runs the same cases; a case gets its own (client id, server URI)
//! so cases cannot see each other's data.

mod support;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use support::model::ModelStore;
use support::RedisServer;

/// Makes a new, unopened store handle on the backend's shared data.
type Factory<'a> = &'a dyn Fn() -> Box<dyn ClientPersistence>;

const SERVER: &str = "127.0.0.1:1883";

fn opened(make: Factory, client_id: &str) -> Box<dyn ClientPersistence> {
    let mut store = make();
    store.open(client_id, SERVER).expect("open");
    store
}

fn sorted_keys(store: &mut dyn ClientPersistence) -> Vec<String> {
    let mut keys = store.keys().expect("keys");
    keys.sort();
    keys
}

fn get_of_a_missing_key_is_an_error(make: Factory) {
    let mut store = opened(make, "get-missing");
    assert!(store.get("s-1").is_err(), "get of a missing key must fail, not answer an empty value");
}

fn put_joins_the_buffers_and_get_returns_them(make: Factory) {
    let mut store = opened(make, "put-get");
    store.put("s-1", vec![b"\x32\x0a", b"", b"\x00\x03abc", b"\x00\x01payload"]).expect("put");
    assert_eq!(store.get("s-1").expect("get"), b"\x32\x0a\x00\x03abc\x00\x01payload");
}

fn put_replaces_an_existing_value(make: Factory) {
    let mut store = opened(make, "overwrite");
    store.put("c-1", vec![b"first, longer value"]).expect("put");
    store.put("c-1", vec![b"second"]).expect("put again");
    assert_eq!(store.get("c-1").expect("get"), b"second");
    assert_eq!(sorted_keys(&mut *store), ["c-1"]);
}

fn values_are_binary_safe_and_may_be_large(make: Factory) {
    let mut store = opened(make, "binary");
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let large: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    store.put("r-7", vec![&every_byte]).expect("put every byte value");
    store.put("s-8", vec![&large[..1000], &large[1000..]]).expect("put 256 KiB");
    assert_eq!(store.get("r-7").expect("get"), every_byte);
    assert_eq!(store.get("s-8").expect("get"), large);
}

fn an_empty_value_is_a_value(make: Factory) {
    let mut store = opened(make, "empty-value");
    store.put("q-1", vec![b""]).expect("put empty");
    assert_eq!(store.get("q-1").expect("get of a stored empty value"), b"");
    assert_eq!(sorted_keys(&mut *store), ["q-1"]);
}

fn remove_of_a_missing_key_succeeds_and_remove_removes(make: Factory) {
    let mut store = opened(make, "remove");
    store.remove("sc-99").expect("remove of a missing key is success");
    store.put("sc-5", vec![b"pubrel"]).expect("put");
    store.put("s-5", vec![b"publish"]).expect("put");
    store.remove("sc-5").expect("remove");
    assert!(store.get("sc-5").is_err(), "a removed key is gone");
    assert_eq!(sorted_keys(&mut *store), ["s-5"]);
}

fn keys_lists_exactly_what_is_stored(make: Factory) {
    let mut store = opened(make, "keys");
    assert!(store.keys().expect("keys of an empty store").is_empty());
    for key in ["c-1", "c-2", "s-1", "s5-300", "sc-1", "r-65535", "q-4"] {
        store.put(key, vec![key.as_bytes()]).expect("put");
    }
    assert_eq!(sorted_keys(&mut *store), ["c-1", "c-2", "q-4", "r-65535", "s-1", "s5-300", "sc-1"]);
}

fn clear_empties_the_store(make: Factory) {
    let mut store = opened(make, "clear");
    store.clear().expect("clear of an empty store");
    store.put("s-1", vec![b"a"]).expect("put");
    store.put("c-1", vec![b"b"]).expect("put");
    store.clear().expect("clear");
    assert!(store.keys().expect("keys").is_empty());
    assert!(store.get("s-1").is_err());
}

fn contains_key_answers_in_paho_c_terms(make: Factory) {
    // paho-mqtt 0.14 hands Paho C `1` for `true`, and Paho C reads `0` as "present":
    // so `true` must mean "absent". See RedisPersistence's docs.
    let mut store = opened(make, "contains");
    store.put("sc-3", vec![b"pubrel"]).expect("put");
    assert!(!store.contains_key("sc-3"), "present key: must answer false (C sees 0 = present)");
    assert!(store.contains_key("sc-4"), "absent key: must answer true (C sees 1 = absent)");
}

fn stores_of_other_clients_and_servers_are_separate(make: Factory) {
    let mut a = make();
    a.open("isolated", "127.0.0.1:1883").expect("open a");
    let mut b = make();
    b.open("isolated", "127.0.0.1:8883").expect("open b");
    let mut c = make();
    c.open("isolated-2", "127.0.0.1:1883").expect("open c");
    a.put("s-1", vec![b"a"]).expect("put a");
    b.put("s-1", vec![b"b"]).expect("put b");
    assert_eq!(a.get("s-1").expect("get a"), b"a");
    assert_eq!(b.get("s-1").expect("get b"), b"b");
    assert!(c.get("s-1").is_err());
    c.clear().expect("clear c");
    assert_eq!(a.get("s-1").expect("a survives clear of c"), b"a");
}

fn data_outlives_close_and_a_new_handle(make: Factory) {
    let mut first = opened(make, "reopen");
    // A record `open` restores (it sets aside what Paho could not).
    let record = support::records::valid("s-9", b"kept");
    first.put("s-9", vec![&record]).expect("put");
    first.close().expect("close");
    let mut second = opened(make, "reopen");
    assert_eq!(second.get("s-9").expect("get after reopen"), record);
}

fn calls_before_open_fail_cleanly(make: Factory) {
    let mut store = make();
    assert!(store.put("s-1", vec![b"x"]).is_err());
    assert!(store.get("s-1").is_err());
    assert!(store.keys().is_err());
    assert!(store.clear().is_err());
    assert!(store.remove("s-1").is_err());
}

/// One case of the contract: a name and a check that panics on a breach.
type Case = (&'static str, fn(Factory));

const CASES: &[Case] = &[
    ("get_of_a_missing_key_is_an_error", get_of_a_missing_key_is_an_error),
    ("put_joins_the_buffers_and_get_returns_them", put_joins_the_buffers_and_get_returns_them),
    ("put_replaces_an_existing_value", put_replaces_an_existing_value),
    ("values_are_binary_safe_and_may_be_large", values_are_binary_safe_and_may_be_large),
    ("an_empty_value_is_a_value", an_empty_value_is_a_value),
    (
        "remove_of_a_missing_key_succeeds_and_remove_removes",
        remove_of_a_missing_key_succeeds_and_remove_removes,
    ),
    ("keys_lists_exactly_what_is_stored", keys_lists_exactly_what_is_stored),
    ("clear_empties_the_store", clear_empties_the_store),
    ("contains_key_answers_in_paho_c_terms", contains_key_answers_in_paho_c_terms),
    ("stores_of_other_clients_and_servers_are_separate", stores_of_other_clients_and_servers_are_separate),
    ("data_outlives_close_and_a_new_handle", data_outlives_close_and_a_new_handle),
    ("calls_before_open_fail_cleanly", calls_before_open_fail_cleanly),
];

fn run_contract(backend: &str, make: Factory) {
    support::init_logging();
    for (name, case) in CASES {
        eprintln!("{backend}: {name}");
        case(make);
    }
}

/// Paho C may call the store from its send and receive threads.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<RedisPersistence>();
};

#[test]
fn reference_model_meets_the_contract() {
    let shared = ModelStore::default();
    run_contract("model", &|| Box::new(shared.reopened()));
}

#[test]
fn redis_over_tcp_meets_the_contract() {
    let redis = RedisServer::start();
    let url = redis.url();
    run_contract("redis tcp", &|| Box::new(RedisPersistence::with_url(&url).expect("valid url")));
}

#[cfg(feature = "unix-socket")]
#[test]
fn redis_over_a_unix_socket_meets_the_contract() {
    let redis = RedisServer::start();
    let url = redis.unix_url();
    run_contract("redis unix", &|| Box::new(RedisPersistence::with_url(&url).expect("valid url")));
}
