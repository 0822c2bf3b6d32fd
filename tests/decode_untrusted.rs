//! The decoder given hostile records, on stable and in every test run: the
//! real Paho records of tests/fixtures/records, the fuzz seeds, and many
//! mutations of them go through the checks the fuzz target `decode` runs
//! (tests/support/decode_checks.rs).
#![cfg(feature = "decode")]

#[path = "support/decode_checks.rs"]
mod decode_checks;

use std::path::{Path, PathBuf};

use decode_checks::{check, join_input, split_input, PREFIXES};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every fixture as (key, value); the file names are `SCENE__KEY.bin`.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    named_fixtures().into_iter().map(|(_, key, value)| (key, value)).collect()
}

/// Every fixture as (file name without `.bin`, key, value).
fn named_fixtures() -> Vec<(String, String, Vec<u8>)> {
    let dir = root().join("tests/fixtures/records");
    let mut fixtures: Vec<(String, String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("read tests/fixtures/records")
        .map(|entry| entry.expect("a directory entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.strip_suffix(".bin")?;
            let (_, key) = name.split_once("__")?;
            Some((name.to_owned(), key.to_owned(), std::fs::read(&path).expect("read a fixture")))
        })
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 20, "only {} fixtures in {}", fixtures.len(), dir.display());
    fixtures
}

/// Keys that are almost Paho's, and some that are not at all.
const HOSTILE_KEYS: [&str; 14] = [
    "",
    "s",
    "s-",
    "s--1",
    "s-+1",
    "s-1 ",
    " s-1",
    "S-1",
    "s-1\0",
    "s-4294967296",
    "s-٣",
    "x-1",
    "sc6-1",
    "q5-\u{1b}[2J",
];

/// A small deterministic generator (splitmix64), so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}

/// `value` with one to four random edits of the kinds that break parsers:
/// flipped bits, boundary bytes, C `int`s set to boundary values (lengths and
/// counts in `c-` and `q-` records), cuts, insertions, deletions, repeats.
fn mutate(rng: &mut Rng, value: &[u8]) -> Vec<u8> {
    let mut out = value.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        let at = rng.below(len + 1);
        match rng.below(7) {
            0 if at < len => out[at] ^= 1 << rng.below(8),
            1 if at < len => out[at] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5)],
            2 if at + 4 <= len => {
                let ints = [
                    0,
                    1,
                    -1,
                    i32::MAX,
                    i32::MIN,
                    i32::try_from(len).unwrap(),
                    i32::try_from(len + 1).unwrap(),
                ];
                out[at..at + 4].copy_from_slice(&ints[rng.below(ints.len())].to_ne_bytes());
            }
            3 => out.truncate(at),
            4 => {
                let extra: Vec<u8> = (0..=rng.below(8)).map(|_| rng.next() as u8).collect();
                out.splice(at..at, extra);
            }
            5 => {
                let end = (at + 1 + rng.below(8)).min(len);
                out.drain(at.min(end)..end);
            }
            _ => {
                let end = (at + 1 + rng.below(16)).min(len);
                let chunk = out[at.min(end)..end].to_vec();
                out.splice(at..at, chunk);
            }
        }
    }
    out
}

#[test]
fn every_fixture_passes_the_checks_under_every_key() {
    let mut decoded_as_stored = 0;
    for (key, value) in fixtures() {
        check(&key, &value);
        decoded_as_stored += usize::from(paho_mqtt_redis::decode::decode(&key, &value).is_ok());
        for prefix in PREFIXES {
            check(&format!("{prefix}1"), &value);
        }
        for hostile in HOSTILE_KEYS {
            check(hostile, &value);
            assert!(paho_mqtt_redis::decode::decode(hostile, &value).is_err(), "{hostile:?} accepted");
        }
    }
    // Real records decode: the checks above cover the success path, not errors only.
    assert_eq!(decoded_as_stored, fixtures().len());
}

#[test]
fn mutated_fixtures_pass_the_checks() {
    const PER_FIXTURE: usize = 3000;
    let mut rng = Rng(0x5eed_0fde_c0de);
    let (mut decoded, mut rejected) = (0usize, 0usize);
    for (key, value) in fixtures() {
        for _ in 0..PER_FIXTURE {
            let mutated = mutate(&mut rng, &value);
            // Mostly the fixture's own key; sometimes another kind's, to mix formats.
            let key = if rng.below(4) == 0 {
                format!("{}7", PREFIXES[rng.below(PREFIXES.len())])
            } else {
                key.clone()
            };
            check(&key, &mutated);
            match paho_mqtt_redis::decode::decode(&key, &mutated) {
                Ok(_) => decoded += 1,
                Err(_) => rejected += 1,
            }
        }
    }
    // Both paths are exercised: a mutation of a payload byte still decodes,
    // one of a length or a type does not.
    let total = decoded + rejected;
    assert!(decoded * 20 > total && rejected * 20 > total, "{decoded} decoded, {rejected} rejected");
}

#[test]
fn fuzz_inputs_split_into_the_key_and_value_they_were_made_of() {
    for key in ["s-0", "s-23", "q5-7", "sc5-4", "s-24", "c-07", "x-1", "", "r5-65535"] {
        let input = join_input(key, b"\x00value");
        assert_eq!(split_input(&input), (key.to_owned(), &b"\x00value"[..]), "{key:?}");
    }
    assert_eq!(join_input("s5-3", b"v").len(), 2, "a key the first byte names takes one byte");
    assert_eq!(split_input(b""), (String::new(), &b""[..]));
}

/// The seeds of the fuzz target hold every fixture, and pass the checks
/// (seeds libFuzzer found and that were added later too). The fuzz crate is
/// not published: the packaged crate has no seeds to replay.
/// `PMR_WRITE_SEEDS=1` writes the fixtures' seeds first, after new fixtures.
#[test]
fn the_fuzz_seeds_hold_the_fixtures_and_pass_the_checks() {
    let fuzz = root().join("fuzz");
    if !fuzz.is_dir() {
        eprintln!("no fuzz/ here (a packaged crate): no seeds to replay");
        return;
    }
    let dir = fuzz.join("seeds/decode");
    if std::env::var_os("PMR_WRITE_SEEDS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).expect("create fuzz/seeds/decode");
        for (name, key, value) in named_fixtures() {
            std::fs::write(dir.join(name), join_input(&key, &value)).expect("write a seed");
        }
    }
    let seeds = read_seeds(&dir);
    for seed in &seeds {
        let (key, value) = split_input(seed);
        check(&key, value);
    }
    for (key, value) in fixtures() {
        let input = join_input(&key, &value);
        assert!(seeds.contains(&input), "no seed in fuzz/seeds/decode for fixture {key} (PMR_WRITE_SEEDS=1)");
    }
}

fn read_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.expect("a directory entry").path()).expect("read a seed"))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}
