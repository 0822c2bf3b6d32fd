//! The repair script on a real redis-server, through both transports: the
//! simulated Redis (`sim`) models it, this checks the model against Redis.
//! Needs `redis-server` (scripts/test.sh installs it), as the integration tests do.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::drive::{self, Confirmations, Runner};
use super::quarantine_tests::judge;
use super::{Core, Exchange, Plan, Settings, BUDGET_COUNTER_FIELD, QUARANTINE_REASON_SUFFIX};
use crate::stats::Counters;
use crate::transport::Transport;
use crate::{Config, RedisPersistence};

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("an address").port();
    let socket = dir.path().join("redis.sock");
    // `$PMR_REDIS_SERVER` (such as Valkey's valkey-server), as in tests/support.
    let binary = std::env::var_os("PMR_REDIS_SERVER").filter(|path| !path.is_empty());
    let child = Command::new(binary.unwrap_or_else(|| "redis-server".into()))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--unixsocket")
        .arg(&socket)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = child.expect("redis-server: these tests run a real one (scripts/test.sh installs it)");
    let server = Server { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        || !server.dir.path().join("redis.sock").exists()
    {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

struct Real {
    transport: Transport,
    config: Config,
}

impl Runner for Real {
    fn run(&mut self, plan: &Plan<'_>) -> Exchange {
        self.transport.run(&self.config, plan)
    }
    fn replies(&mut self) -> Confirmations {
        self.transport.replies()
    }
    fn settle(&mut self) {
        self.transport.settle(&self.config);
    }
    fn generation(&self) -> u64 {
        self.transport.generation()
    }
    fn may_wait(&self) -> bool {
        self.transport.may_wait()
    }
}

fn fields(conn: &mut redis::Connection, key: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL").arg(key).query(conn).expect("HGETALL");
    fields.sort();
    fields
}

fn repair_on(url: &str, budget: Option<u64>) {
    let mut builder = RedisPersistence::builder().url(url);
    if let Some(budget) = budget {
        builder = builder.max_store_bytes(budget);
    }
    let config = builder.into_config().expect("a config");
    let mut conn = crate::transport::connect(&config).expect("connect");
    let hash = format!("repair-{}", budget.is_some());
    let seed: [(&str, &[u8]); 6] = [
        ("s-1", b"good"),
        ("s-2", b""),
        ("c-3", b"garbage\x00\xff"),
        ("c5-7", b"command"),
        ("sc-4", b""),
        (BUDGET_COUNTER_FIELD, b"999"),
    ];
    for (field, value) in seed {
        let _: () = redis::cmd("HSET").arg(&hash).arg(field).arg(value).query(&mut conn).expect("HSET");
    }
    let settings = Settings { budget, judge: Some(judge), ..Settings::default() };
    let mut core = Core::new(hash.clone(), settings);
    let mut real = Real { transport: Transport::new(&config, Arc::new(Counters::new())), config };
    real.transport.begin_call();
    drive::open(&mut core, &mut real).expect("open");
    assert_eq!(core.take_repaired(), (3, 1), "{url}");
    real.transport.begin_call();
    let mut keys = drive::keys(&mut core, &mut real);
    keys.sort();
    assert_eq!(keys, ["c-7", "s-1"]);

    let mut expected: Vec<(Vec<u8>, Vec<u8>)> =
        vec![(b"c-7".to_vec(), b"command".to_vec()), (b"s-1".to_vec(), b"good".to_vec())];
    if budget.is_some() {
        expected.push((BUDGET_COUNTER_FIELD.as_bytes().to_vec(), b"11".to_vec()));
    } else {
        // Without a budget, open drops a count no write keeps.
        real.transport.begin_call();
        drive::put(&mut core, &mut real, "s-9", &[b"x"]).expect("put");
        expected.push((b"s-9".to_vec(), b"x".to_vec()));
    }
    expected.sort();
    assert_eq!(fields(&mut conn, &hash), expected, "{url}");

    let quarantine = Config::quarantine_name(&hash);
    let entries = fields(&mut conn, &quarantine);
    let values: Vec<(String, Vec<u8>)> = entries
        .iter()
        .map(|(field, value)| (String::from_utf8_lossy(field).into_owned(), value.clone()))
        .filter(|(field, _)| !field.ends_with(QUARANTINE_REASON_SUFFIX))
        .map(|(field, value)| (field.rsplit_once('@').expect("{key}@{ms}").0.to_owned(), value))
        .collect();
    assert_eq!(
        values,
        [
            ("c-3".to_owned(), b"garbage\x00\xff".to_vec()),
            ("s-2".to_owned(), Vec::new()),
            ("sc-4".to_owned(), Vec::new())
        ],
        "{url}"
    );
    let reasons: Vec<&[u8]> = entries
        .iter()
        .filter(|(field, _)| field.ends_with(QUARANTINE_REASON_SUFFIX.as_bytes()))
        .map(|(_, reason)| reason.as_slice())
        .collect();
    assert_eq!(reasons, [b"garbage".as_slice(), b"empty record", b"empty record"]);

    // The same key set aside again (an operator put it back as it was): both stay.
    let _: () = redis::cmd("HSET").arg(&hash).arg("s-2").arg("").query(&mut conn).expect("HSET");
    let mut again = Core::new(hash.clone(), settings);
    real.transport.begin_call();
    drive::open(&mut again, &mut real).expect("open");
    let set_aside = fields(&mut conn, &quarantine)
        .iter()
        .filter(|(field, _)| {
            field.starts_with(b"s-2@") && !field.ends_with(QUARANTINE_REASON_SUFFIX.as_bytes())
        })
        .count();
    assert_eq!(set_aside, 2, "{url}");
}

#[test]
fn the_repair_script_moves_rewrites_and_counts_on_redis() {
    let server = start();
    repair_on(&format!("redis://127.0.0.1:{}/0", server.port), None);
    repair_on(&format!("redis://127.0.0.1:{}/1", server.port), Some(1000));
    #[cfg(feature = "unix-socket")]
    {
        let socket = server.dir.path().join("redis.sock");
        repair_on(&format!("redis+unix://{}?db=2", socket.display()), None);
        repair_on(&format!("redis+unix://{}?db=3", socket.display()), Some(1000));
    }
}
