//! Fuzzes real Paho C's restore with what the store lets through.
//!
//! `open` runs every record it reads through `paho::restore::at_open`, and
//! what passes is handed to Paho C 1.3.16's parsers at client creation
//! (`MQTTPersistence_restorePackets` for `s-`, `sc-`, `r-`;
//! `MQTTAsync_restoreCommands` for `c-`; and their `5` forms). Redis is
//! shared with other processes, so those records are untrusted input to C
//! code: nothing that passes the check may crash Paho, make the client's
//! creation fail, or be removed by Paho as unparsable.
//!
//! Each iteration takes real records from `tests/fixtures/traces`, mutates
//! them with a seeded PRNG (bit flips, length fields, truncation, extension,
//! swapped kinds, versions and values), seeds a store with a handful, creates
//! a real client of MQTT 3.1.1 or 5 on it (`AsyncClient::new`, which runs
//! Paho's restore) and drops it. A crash kills this test binary, which fails
//! the test; under AddressSanitizer (`scripts/asan.sh`) so does any invalid
//! memory access in Paho C.
//!
//! Environment: `PMR_RESTORE_FUZZ_SEED` replays a run (the seed is printed
//! first, to stderr, uncaptured, so a crash leaves it visible),
//! `PMR_RESTORE_FUZZ_ITERATIONS` sets the iterations (default 1000),
//! `PMR_RESTORE_FUZZ_VERBOSE=1` prints every iteration's records before the
//! client is created. The ignored test `unchecked_records_reach_paho` runs
//! the same records through an in-memory store with no check at all: the
//! evidence of what the check must stop; `PMR_RESTORE_FUZZ_RECORDS` gives it
//! exact records instead (`key=hex,key=hex`, an empty hex is a 0-byte value).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use paho_mqtt as mqtt;
use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::{Config, RedisPersistence};
use redis::Commands;
use support::model::ModelStore;
use support::RedisServer;

const SEED_ENV: &str = "PMR_RESTORE_FUZZ_SEED";
const ITERATIONS_ENV: &str = "PMR_RESTORE_FUZZ_ITERATIONS";
const VERBOSE_ENV: &str = "PMR_RESTORE_FUZZ_VERBOSE";
const RECORDS_ENV: &str = "PMR_RESTORE_FUZZ_RECORDS";
/// About a second here without ASAN; scripts/asan.sh runs more.
const DEFAULT_ITERATIONS: u64 = 1000;
/// Never connected to: only the store's name depends on it.
const SERVER_URI: &str = "tcp://127.0.0.1:1883";
const V3: u32 = mqtt::MQTT_VERSION_3_1_1;
const V5: u32 = mqtt::MQTT_VERSION_5;

/// The key prefixes Paho C 1.3.16 restores at creation, as (v3, v5) pairs.
const KINDS: [(&str, &str); 4] = [("s-", "s5-"), ("sc-", "sc5-"), ("r-", "r5-"), ("c-", "c5-")];

#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    key: String,
    value: Vec<u8>,
}

impl Record {
    /// (kind index in [`KINDS`], is v5, number), for keys of [`KINDS`] only.
    fn parts(&self) -> (usize, bool, &str) {
        for (index, (v3, v5)) in KINDS.iter().enumerate() {
            // The v5 prefix first: "s5-" is not a prefix of "s-1", but "s" is of both.
            if let Some(number) = self.key.strip_prefix(v5) {
                return (index, true, number);
            }
            if let Some(number) = self.key.strip_prefix(v3) {
                return (index, false, number);
            }
        }
        panic!("{:?} is not a key of a kind Paho restores", self.key)
    }

    fn is_command(&self) -> bool {
        self.parts().0 == 3
    }

    fn describe(&self) -> String {
        format!("{}={}", self.key, hex(&self.value))
    }
}

/// SplitMix64 over [`support::mix`]: one seed, the same records on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let out = support::mix(self.0);
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        out
    }

    /// Uniform enough in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd-length hex {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_else(|e| panic!("hex {text:?}: {e}")))
        .collect()
}

/// Every distinct record the traces' `put` lines wrote, of the kinds Paho restores at creation.
fn corpus() -> Vec<Record> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/traces");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "trace"))
        .collect();
    paths.sort();
    let mut seen = BTreeSet::new();
    let mut records = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        for line in text.lines() {
            let mut words = line.split(' ');
            if words.next() != Some("put") {
                continue;
            }
            let (Some(key), Some(value)) = (words.next(), words.next()) else { continue };
            let record = Record { key: key.to_owned(), value: unhex(value) };
            let restored = KINDS.iter().any(|(v3, v5)| key.starts_with(v3) || key.starts_with(v5));
            if restored && seen.insert((record.parts().0, record.parts().1, record.value.clone())) {
                records.push(record);
            }
        }
    }
    records
}

/// How many bytes a packet's fixed header takes (type byte and remaining length), as far as `value` goes.
fn fixed_header_len(value: &[u8]) -> usize {
    let mut len = 1;
    while len < value.len() && len < 5 {
        len += 1;
        if value[len - 1] & 0x80 == 0 {
            break;
        }
    }
    len
}

/// Writes `bytes` at `at`, growing `value` if needed.
fn write_at(value: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if value.len() < at + bytes.len() {
        value.resize(at + bytes.len(), 0);
    }
    value[at..at + bytes.len()].copy_from_slice(bytes);
}

/// One mutation of `record` (or none), and what it was.
fn mutate(rng: &mut Rng, record: &Record, corpus: &[Record]) -> (Record, String) {
    let mut out = record.clone();
    let len = out.value.len();
    let what = match rng.below(10) {
        0 | 1 => "unchanged".to_owned(),
        2 if len > 0 => {
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let bit = rng.below(len * 8);
                out.value[bit / 8] ^= 1 << (bit % 8);
            }
            format!("{flips} bit flips")
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let random = rng.next() as u8;
            out.value[at] = *rng.pick(&[0x00, 0x01, 0x7f, 0x80, 0xff, random]);
            format!("byte {at} = {:02x}", out.value[at])
        }
        4 => {
            if out.is_command() {
                // Native-endian ints: type at 0, token at 4, then a count
                // (SUBSCRIBE, UNSUBSCRIBE) or the topic; a PUBLISH's
                // payloadlen follows the topic's NUL.
                let payloadlen_at = out.value.iter().skip(8).position(|&b| b == 0).map(|nul| 8 + nul + 1);
                let at = match payloadlen_at {
                    Some(at) if rng.below(2) == 0 => at,
                    _ => *rng.pick(&[0, 8]),
                };
                let n = *rng.pick(&[0, 1, -1, i32::MAX, i32::MIN, 0x10000, len as i32, len as i32 + 1]);
                write_at(&mut out.value, at, &n.to_ne_bytes());
                format!("int at {at} = {n}")
            } else {
                // The remaining length, or the topic length after it (or,
                // for PUBREL, the message id).
                let header = fixed_header_len(&out.value);
                let (at, bytes): (usize, Vec<u8>) = if rng.below(2) == 0 {
                    (1, (0..1 + rng.below(5)).map(|_| *rng.pick(&[0x00, 0x7f, 0x80, 0xff, 0x81])).collect())
                } else {
                    (header, vec![*rng.pick(&[0x00, 0x7f, 0x80, 0xff]), *rng.pick(&[0x00, 0x01, 0xff])])
                };
                write_at(&mut out.value, at, &bytes);
                format!("length bytes at {at} = {}", hex(&bytes))
            }
        }
        5 => {
            let keep = rng.below(len + 1);
            out.value.truncate(keep);
            format!("truncated to {keep}")
        }
        6 => {
            let extra = 1 + rng.below(16);
            let fill = *rng.pick(&[None, Some(0x00), Some(0x80), Some(0xff)]);
            for _ in 0..extra {
                out.value.push(fill.unwrap_or(rng.next() as u8));
            }
            format!("extended by {extra}")
        }
        7 => {
            let (_, v5, number) = out.parts();
            let (v3_prefix, v5_prefix) = rng.pick(&KINDS);
            out.key = format!("{}{number}", if v5 { v5_prefix } else { v3_prefix });
            "kind swapped".to_owned()
        }
        8 => {
            let (kind, v5, number) = out.parts();
            out.key = format!("{}{number}", if v5 { KINDS[kind].0 } else { KINDS[kind].1 });
            "version swapped".to_owned()
        }
        _ => {
            out.value = rng.pick(corpus).value.clone();
            "value swapped".to_owned()
        }
    };
    (out, what)
}

/// An iteration's records (distinct keys) and the client version, from `rng`.
fn iteration(rng: &mut Rng, corpus: &[Record]) -> (u32, Vec<(Record, String)>) {
    let version = if rng.below(2) == 0 { V3 } else { V5 };
    let mut records: Vec<(Record, String)> = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let original = rng.pick(corpus);
        let (mut record, mut what) = mutate(rng, original, corpus);
        while records.iter().any(|(r, _)| r.key == record.key) {
            let (kind, v5, _) = record.parts();
            let prefix = if v5 { KINDS[kind].1 } else { KINDS[kind].0 };
            record.key = format!("{prefix}{}", 1 + rng.below(65_535));
            // The key's number no longer matches the packet's message id.
            what = format!("{what}, renumbered");
        }
        records.push((record, what));
    }
    (version, records)
}

/// The records given in [`RECORDS_ENV`], if any.
fn records_from_env() -> Option<Vec<Record>> {
    let text = std::env::var(RECORDS_ENV).ok()?;
    Some(
        text.split(',')
            .map(|item| {
                let (key, value) =
                    item.split_once('=').unwrap_or_else(|| panic!("{RECORDS_ENV}: {item:?} is not key=hex"));
                Record { key: key.to_owned(), value: unhex(value) }
            })
            .collect(),
    )
}

/// Writes to the process's stderr, past the test harness's capture: a crash
/// of Paho loses everything captured, and these lines are what replays it.
fn uncaptured(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The iterations asked for, at most as many as the process's file
/// descriptors allow: Paho C keeps 2 of every client created and destroyed
/// (seen with no persistence at all: 50 clients, 100 more fds), and a CI
/// machine may allow only 1,024.
fn iterations() -> u64 {
    let asked = match std::env::var(ITERATIONS_ENV) {
        Ok(text) => text.trim().parse().unwrap_or_else(|e| panic!("{ITERATIONS_ENV}={text:?}: {e}")),
        Err(_) => DEFAULT_ITERATIONS,
    };
    let limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|limits| {
        let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse::<u64>().ok()
    });
    match limit.map(|limit| limit.saturating_sub(200) / 2) {
        Some(room) if room < asked => {
            uncaptured(&format!("{asked} iterations asked, {room} fit in the fd limit of this process"));
            room
        }
        _ => asked,
    }
}

/// The calls Paho made on a store while the client was being created.
#[derive(Default)]
struct Seen {
    /// Every key `keys` answered (Paho lists the store once per restore).
    listed: BTreeSet<String>,
    /// Every key Paho removed.
    removed: Vec<String>,
}

/// A store that notes what Paho saw and removed; everything else goes to `inner`.
struct Watch<P> {
    inner: P,
    seen: Arc<Mutex<Seen>>,
}

impl<P: ClientPersistence> ClientPersistence for Watch<P> {
    fn open(&mut self, client_id: &str, server_uri: &str) -> mqtt::Result<()> {
        self.inner.open(client_id, server_uri)
    }
    fn close(&mut self) -> mqtt::Result<()> {
        self.inner.close()
    }
    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> mqtt::Result<()> {
        self.inner.put(key, buffers)
    }
    fn get(&mut self, key: &str) -> mqtt::Result<Vec<u8>> {
        self.inner.get(key)
    }
    fn remove(&mut self, key: &str) -> mqtt::Result<()> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).removed.push(key.to_owned());
        self.inner.remove(key)
    }
    fn keys(&mut self) -> mqtt::Result<Vec<String>> {
        let keys = self.inner.keys()?;
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).listed.extend(keys.iter().cloned());
        Ok(keys)
    }
    fn clear(&mut self) -> mqtt::Result<()> {
        self.inner.clear()
    }
    fn contains_key(&mut self, key: &str) -> bool {
        self.inner.contains_key(key)
    }
}

/// Creates a client of `version` on `persistence`: Paho's restore runs here.
fn create(
    version: u32,
    client_id: &str,
    persistence: impl ClientPersistence + Send + 'static,
) -> mqtt::Result<mqtt::AsyncClient> {
    mqtt::AsyncClient::new(
        mqtt::CreateOptionsBuilder::new()
            .server_uri(SERVER_URI)
            .client_id(client_id)
            .mqtt_version(version)
            .user_persistence(persistence)
            .send_while_disconnected(true)
            .allow_disconnected_send_at_anytime(true)
            .finalize(),
    )
}

/// A removal Paho makes of a valid record: an `sc-N` whose `s-N` is not in
/// the store ("orphaned PUBRELs", `MQTTPersistence_restorePackets`).
fn orphan_pubrel(key: &str, listed: &BTreeSet<String>) -> bool {
    [("sc-", "s-"), ("sc5-", "s5-")].iter().any(|(pubrel, publish)| {
        key.strip_prefix(pubrel).is_some_and(|n| !listed.contains(&format!("{publish}{n}")))
    })
}

fn start_line(test: &str, seed: u64, iterations: u64) {
    uncaptured(&format!(
        "{test}: seed {seed}, {iterations} iterations (replay: {SEED_ENV}={seed} {ITERATIONS_ENV}={iterations})"
    ));
}

/// The test of the issue: mutated records in Redis, the store's check, real
/// Paho's restore; no crash, no failed creation, no record Paho could not
/// parse, nothing the store showed Paho lost.
///
/// Before the check (a stub that passed every record), the unchecked records
/// reached Paho C and the test binary died of SIGSEGV in 3 of 4 seeds tried
/// (1 to 4, 150 iterations); seed 3 survived but 40 creations failed and
/// Paho removed 83 of 517 records as unparsable.
#[test]
fn restore_survives_every_record_the_check_lets_through() {
    support::init_logging();
    let seed = support::seed_from_env(SEED_ENV);
    let iterations = iterations();
    start_line("restore_survives_every_record_the_check_lets_through", seed, iterations);
    let corpus = corpus();
    assert!(corpus.len() > 100, "the traces hold {} records of the kinds Paho restores", corpus.len());
    let verbose = std::env::var_os(VERBOSE_ENV).is_some();
    let redis = RedisServer::start();
    let mut connection = redis.connection();
    let (mut restored, mut quarantined) = (0usize, 0usize);
    for i in 0..iterations {
        let mut rng = Rng(support::mix(seed ^ support::mix(i)));
        let (version, records) = iteration(&mut rng, &corpus);
        let replay =
            format!("seed {seed} iteration {i} (replay: {SEED_ENV}={seed} {ITERATIONS_ENV}={})", i + 1);
        let shown: Vec<String> =
            records.iter().map(|(r, what)| format!("{} ({what})", r.describe())).collect();
        if verbose {
            uncaptured(&format!("{replay}: MQTT {version}: {}", shown.join(" ")));
        }
        let client_id = support::unique_id("restore-fuzz");
        let hash = support::mqtt::store_hash(&client_id, SERVER_URI);
        let fields: Vec<(&str, &[u8])> =
            records.iter().map(|(r, _)| (r.key.as_str(), r.value.as_slice())).collect();
        let () = connection.hset_multiple(&hash, &fields).expect("seed the store");

        let persistence = RedisPersistence::builder()
            .url(redis.url())
            .mqtt_version(version)
            .build()
            .expect("valid options");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let watch = Watch { inner: persistence, seen: Arc::clone(&seen) };
        let created = create(version, &client_id, watch);
        let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
        // What the store holds once the restore is done: read before the
        // client is dropped (MQTTAsync_destroy of a never-connected client
        // with a clean session clears the store).
        let held: BTreeSet<String> = connection.hkeys(&hash).expect("HKEYS");

        // Without the check, the creation fails when a v3
        // client is shown an s5-, sc5- or r5- record
        // (MQTTPersistence_restorePackets: "can't restore version 5 data
        // with a version 3 client"), or a packet of another type than its
        // key's (a PUBREL under `s-` read as a PUBLISH: its message id is
        // read from past the PUBREL's struct, and `sc-<id>` no longer fits
        // PERSISTENCE_MAX_KEY_LENGTH). The check rewrites or quarantines
        // both.
        let client = created.unwrap_or_else(|e| {
            panic!(
                "{replay}: an MQTT {version} client must be created whatever the store holds: {e}; \
                 the store listed {:?}; records: {shown:?}",
                seen.listed
            )
        });
        drop(client);

        // Paho removes only the valid records it finds orphaned; one it removes for any other reason is one it could not
        // parse (pack == NULL), which the check must have set aside.
        let unparsed: Vec<&String> =
            seen.removed.iter().filter(|k| !orphan_pubrel(k, &seen.listed)).collect();
        assert!(
            unparsed.is_empty(),
            "{replay}: Paho C removed {unparsed:?}, records it could not parse, which the check let \
             through; the store listed {:?}; records: {shown:?}",
            seen.listed
        );
        // Every record the store let through is still there: nothing the
        // store showed Paho disappeared, but for orphaned PUBRELs.
        let lost: Vec<&String> =
            seen.listed.iter().filter(|k| !held.contains(*k) && !seen.removed.contains(k)).collect();
        assert!(
            lost.is_empty(),
            "{replay}: {lost:?} were shown to Paho but are no longer in the store; records: {shown:?}"
        );
        // Against a vacuous check: a record of the client's own version,
        // unchanged from what real Paho wrote, is restored.
        for (record, what) in &records {
            let own_version = record.parts().1 == (version == V5);
            // Paho C 1.3.16 cannot send its own MQTT 3 UNSUBSCRIBE record
            // back after a restart (`MQTTAsync_restoreCommand` refuses a
            // topic ending at the record's last byte), so the check sets it aside.
            let v3_unsubscribe = record.key.starts_with("c-") && record.value.first() == Some(&10);
            if what == "unchanged" && own_version && !v3_unsubscribe {
                assert!(
                    seen.listed.contains(&record.key),
                    "{replay}: {} as real Paho wrote it was not shown to an MQTT {version} client; listed {:?}; records: {shown:?}",
                    record.key,
                    seen.listed
                );
            }
        }
        restored += seen.listed.len();
        let quarantine: BTreeMap<String, Vec<u8>> =
            connection.hgetall(Config::quarantine_name(&hash)).expect("HGETALL quarantine");
        quarantined += quarantine.len();
        let () = connection.del(&[hash.clone(), Config::quarantine_name(&hash)]).expect("DEL");
    }
    println!(
        "{iterations} iterations: {restored} records shown to Paho's restore, {quarantined} quarantined"
    );
    assert!(restored > 0, "seed {seed}: no record ever reached Paho's restore: the fuzzing tested nothing");
}

/// The same records in a store with no check at all, straight into Paho's
/// restore: under AddressSanitizer this is where Paho C's out-of-bounds
/// reads show (the evidence of what the check must stop). Without it, a
/// crash or silent heap corruption. Run by scripts/asan.sh; it is expected
/// to fail there.
#[test]
#[ignore = "hands Paho C unchecked records: expected to crash under AddressSanitizer (scripts/asan.sh)"]
fn unchecked_records_reach_paho() {
    let seed = support::seed_from_env(SEED_ENV);
    let given = records_from_env();
    let iterations = if given.is_some() { 2 } else { iterations() };
    start_line("unchecked_records_reach_paho", seed, iterations);
    let corpus = corpus();
    let mut failed = 0;
    for i in 0..iterations {
        let mut rng = Rng(support::mix(seed ^ support::mix(i)));
        let (version, records) = match &given {
            // Both versions, one after the other.
            Some(records) => {
                ([V3, V5][i as usize % 2], records.iter().map(|r| (r.clone(), "given".to_owned())).collect())
            }
            None => iteration(&mut rng, &corpus),
        };
        let shown: Vec<String> =
            records.iter().map(|(r, what)| format!("{} ({what})", r.describe())).collect();
        // Always: the last line before a crash names its input.
        uncaptured(&format!("iteration {i}: MQTT {version}: {}", shown.join(" ")));
        let client_id = support::unique_id("unchecked");
        let store = ModelStore::default();
        let mut seeding = store.reopened();
        // Paho opens its store with the server URI without `tcp://`.
        seeding.open(&client_id, SERVER_URI.trim_start_matches("tcp://")).expect("open the model store");
        for (record, _) in &records {
            seeding.put(&record.key, vec![&record.value]).expect("seed the model store");
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let watch = Watch { inner: store.reopened(), seen: Arc::clone(&seen) };
        match create(version, &client_id, watch) {
            Ok(client) => drop(client),
            Err(_) => failed += 1,
        }
        let listed = std::mem::take(&mut seen.lock().unwrap_or_else(PoisonError::into_inner).listed);
        let keys: BTreeSet<String> = records.iter().map(|(r, _)| r.key.clone()).collect();
        assert_eq!(listed, keys, "iteration {i}: Paho's restore was shown every record seeded");
    }
    println!("{iterations} iterations, {failed} creations failed (no check: expected for v5 records and a v3 client)");
    // Reached only if Paho survived every input: the point of this test is
    // the crash, and the assertion above that Paho was shown every record.
}
