//! Model-based property test: random sequences of store operations, mixed
//! with connection kills, close+open, Redis restarts that keep the data and
//! stretches with Redis down, run step by step against a real Redis and the
//! reference model (`support::model`); every answer must agree.
//!
//! One redis-server serves the whole run (each case has its own client id).
//! `PROPTEST_CASES` overrides the number of cases.

mod support;

use std::sync::Mutex;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::model::ModelStore;
use support::RedisServer;

const SERVER: &str = "127.0.0.1:1883";
/// Keys as Paho writes them, few enough that operations often hit the same key.
/// One MQTT version's (3.1.1, the store's default), as one client writes
/// them, but for commands, which Paho restores in either version.
const KEYS: &[&str] = &["c-1", "c-2", "c5-3", "s-1", "s-2", "sc-1", "r-1", "sc-3", "r-65535", "q-4", "x-5"];
const DEFAULT_CASES: u32 = 400;

#[derive(Clone, Debug)]
enum Step {
    Put(&'static str, Vec<Vec<u8>>),
    Get(&'static str),
    Remove(&'static str),
    Keys,
    Clear,
    ContainsKey(&'static str),
    Contains(&'static str),
    /// `CLIENT KILL TYPE normal`: Redis drops the store's connection.
    KillConnection,
    /// `close` then `open` of the store, as Paho does across a client restart.
    Reopen,
    /// Redis killed and restarted; AOF with `appendfsync always` keeps the data.
    RestartRedis,
    /// Redis killed; the steps until `RedisUp` run without it.
    RedisDown,
    /// Redis started again (with its data) after `RedisDown`.
    RedisUp,
}

/// Whether a `put` of `key` succeeds while Redis is down: the store keeps
/// every kind of record Paho carries on without, which is every Paho key.
/// The model names Paho's prefixes itself rather than asking the crate.
fn kept_while_redis_is_down(key: &str) -> bool {
    const PAHO_PREFIXES: [&str; 10] = ["s-", "s5-", "sc-", "sc5-", "r-", "r5-", "c-", "c5-", "q-", "q5-"];
    PAHO_PREFIXES.iter().any(|prefix| {
        key.strip_prefix(prefix)
            .is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn step() -> impl Strategy<Value = Step> {
    let key = || prop::sample::select(KEYS);
    // A valid record of the key (`open` sets aside what Paho could not
    // restore), in up to three buffers, as Paho hands them over.
    let record = (key(), prop::collection::vec(any::<u8>(), 0..48), 0usize..64, 0usize..64).prop_map(
        |(key, payload, cut_a, cut_b)| {
            let record = support::records::valid(key, &payload);
            let (a, b) = (cut_a.min(record.len()), cut_b.min(record.len()));
            let (low, high) = (a.min(b), a.max(b));
            let buffers = [&record[..low], &record[low..high], &record[high..]];
            let mut buffers: Vec<Vec<u8>> =
                buffers.iter().filter(|b| !b.is_empty()).map(|b| b.to_vec()).collect();
            if buffers.is_empty() {
                buffers.push(Vec::new());
            }
            Step::Put(key, buffers)
        },
    );
    prop_oneof![
        24 => record,
        16 => key().prop_map(Step::Get),
        12 => key().prop_map(Step::Remove),
        8 => Just(Step::Keys),
        4 => Just(Step::Clear),
        8 => key().prop_map(Step::ContainsKey),
        8 => key().prop_map(Step::Contains),
        4 => Just(Step::KillConnection),
        4 => Just(Step::Reopen),
        // Rare: one restart costs more than a whole case of other steps.
        1 => Just(Step::RestartRedis),
        1 => Just(Step::RedisDown),
        3 => Just(Step::RedisUp),
    ]
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

/// Runs `steps` on a fresh store and on the model, comparing every answer.
fn run_case(redis: &Mutex<RedisServer>, budget: Option<u64>, steps: &[Step]) -> Result<(), TestCaseError> {
    let client_id = support::unique_id("model");
    let url = redis.lock().unwrap_or_else(|e| e.into_inner()).url();
    let builder = RedisPersistence::builder().url(url);
    let builder = match budget {
        Some(bytes) => builder.max_store_bytes(bytes),
        None => builder,
    };
    let mut store = builder.build().expect("valid options");
    let mut model = ModelStore::default();
    store.open(&client_id, SERVER).expect("open");
    model.open(&client_id, SERVER).expect("open");
    let mut redis_down = false;
    for (i, step) in steps.iter().enumerate() {
        let at = format!("step {i} {step:?}");
        match step {
            Step::Put(key, buffers) => {
                let buffers: Vec<&[u8]> = buffers.iter().map(Vec::as_slice).collect();
                let put = store.put(key, buffers.clone());
                if redis_down && !kept_while_redis_is_down(key) {
                    prop_assert!(put.is_err(), "{}: put succeeded with Redis down", at);
                } else {
                    prop_assert!(put.is_ok(), "{}: put failed: {:?}", at, put);
                    model.put(key, buffers).expect("model put");
                }
            }
            Step::Get(key) => {
                let (got, expected) = (store.get(key).ok(), model.get(key).ok());
                // With Redis down, only what the store holds in memory can be read.
                if !(redis_down && got.is_none()) {
                    prop_assert_eq!(got, expected, "{}", at);
                }
            }
            Step::Remove(key) => {
                prop_assert!(store.remove(key).is_ok(), "{}: remove failed", at);
                model.remove(key).expect("model remove");
            }
            Step::Keys => {
                let got = sorted(store.keys().expect("keys"));
                prop_assert_eq!(got, sorted(model.keys().expect("model keys")), "{}", at);
            }
            Step::Clear if redis_down => prop_assert!(store.clear().is_err(), "{}: clear without Redis", at),
            Step::Clear => {
                prop_assert!(store.clear().is_ok(), "{}: clear failed", at);
                model.clear().expect("model clear");
            }
            Step::ContainsKey(key) => {
                prop_assert_eq!(store.contains_key(key), model.contains_key(key), "{}", at);
            }
            Step::Contains(key) => {
                let present = !model.contains_key(key); // the model answers inverted, like the store
                prop_assert_eq!(store.monitor().contains(key), Some(present), "{}", at);
            }
            // Without Redis there is no connection to kill, and a reopen would
            // fail to read the hash (and drop what waits in memory).
            Step::KillConnection | Step::Reopen | Step::RestartRedis if redis_down => {}
            Step::KillConnection => {
                let server = redis.lock().unwrap_or_else(|e| e.into_inner());
                let _killed: usize = redis::cmd("CLIENT")
                    .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
                    .query(&mut server.connection())
                    .expect("CLIENT KILL");
            }
            Step::Reopen => {
                store.close().expect("close");
                store.open(&client_id, SERVER).expect("open again");
                model.close().expect("model close");
                model.open(&client_id, SERVER).expect("model open");
            }
            Step::RestartRedis => redis.lock().unwrap_or_else(|e| e.into_inner()).restart(),
            Step::RedisDown => {
                redis.lock().unwrap_or_else(|e| e.into_inner()).kill();
                redis_down = true;
            }
            Step::RedisUp if redis_down => {
                redis.lock().unwrap_or_else(|e| e.into_inner()).restart();
                redis_down = false;
            }
            Step::RedisUp => {}
        }
    }
    if redis_down {
        redis.lock().unwrap_or_else(|e| e.into_inner()).restart();
    }
    // Once the store is closed, the data in Redis is exactly the model's.
    // (While it is open, a removal may wait for the next write: see
    // `RedisPersistence`'s documentation.)
    let hash = store.hash_name().expect("open");
    store.close().expect("close");
    let server = redis.lock().unwrap_or_else(|e| e.into_inner());
    let mut raw: std::collections::BTreeMap<String, Vec<u8>> =
        redis::Commands::hgetall(&mut server.connection(), &hash).expect("HGETALL");
    let expected: std::collections::BTreeMap<String, Vec<u8>> = model
        .keys()
        .expect("model keys")
        .into_iter()
        .map(|key| {
            let value = model.get(&key).expect("model get");
            (key, value)
        })
        .collect();
    if budget.is_some() {
        // The budget's byte count is the sum of the values, absent once empty.
        let counted = raw.remove(paho_mqtt_redis::admin::BUDGET_COUNTER_FIELD);
        let sum: usize = raw.values().map(Vec::len).sum();
        let expected_count = (!raw.is_empty()).then(|| sum.to_string().into_bytes());
        prop_assert_eq!(counted, expected_count, "the budget's byte count");
    }
    prop_assert_eq!(raw, expected, "Redis holds exactly the model's records");
    Ok(())
}

/// Runs the property on one redis-server, with the store built with `budget`.
fn check_against_the_model(budget: Option<u64>) {
    support::init_logging();
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_CASES);
    let redis = Mutex::new(RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]));
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(step(), 1..40), |steps| run_case(&redis, budget, &steps));
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn the_store_answers_like_the_reference_model_through_reconnects() {
    check_against_the_model(None);
}

/// The same with a budget that is never reached: every write and removal then
/// runs as a Lua script, which must keep the byte count exact.
#[test]
fn a_store_with_a_budget_answers_like_the_model_and_counts_its_bytes() {
    check_against_the_model(Some(1 << 20));
}
