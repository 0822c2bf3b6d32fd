//! The docs work as written: the README's quick start publishes through a
//! real redis-server and mosquitto over TCP and the Unix socket; the
//! deployment guide's `redis.conf` starts a redis-server (once per durability
//! row) that a store opens on its socket; the troubleshooting guide's retry
//! creates the client once Redis comes up. The README and the guides show
//! the example files these tests run, checked here line for line.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use support::{free_port, require_binary, wait_until, Mosquitto, RedisServer};

#[allow(dead_code)] // its `main` is the example's
#[path = "../examples/quick_start.rs"]
mod quick_start;

#[allow(dead_code)]
#[path = "../examples/wait_for_redis.rs"]
mod wait_for_redis;

const README: &str = include_str!("../README.md");
const DEPLOYMENT: &str = include_str!("../src/guide/deployment.md");
const TROUBLESHOOTING: &str = include_str!("../src/guide/troubleshooting.md");

/// An example file without its `//!` header, as the docs show it.
fn shown(example: &str) -> String {
    let lines: Vec<&str> = example.lines().skip_while(|l| l.starts_with("//!")).collect();
    lines.join("\n").trim().to_owned()
}

#[test]
fn the_docs_show_the_examples_these_tests_run() {
    let quick_start = shown(include_str!("../examples/quick_start.rs"));
    assert!(README.contains(&quick_start), "README.md's quick start differs from examples/quick_start.rs");
    let retry = shown(include_str!("../examples/wait_for_redis.rs"));
    assert!(
        TROUBLESHOOTING.contains(&retry),
        "the troubleshooting guide's retry differs from examples/wait_for_redis.rs"
    );
    // The README's Unix socket is the one the deployment guide's redis.conf opens.
    let socket = directive(&redis_conf(), "unixsocket").expect("the redis.conf opens a Unix socket");
    assert!(README.contains(&format!("redis+unix://{socket}")), "README.md connects to {socket}");
}

#[test]
fn the_quick_start_publishes_over_tcp_and_the_unix_socket() {
    let redis = RedisServer::start();
    let broker = Mosquitto::start();
    let mut urls = vec![redis.url()];
    if cfg!(feature = "unix-socket") {
        urls.push(redis.unix_url());
    }
    let hash = support::mqtt::store_hash("gateway-17", &broker.uri());
    for url in urls {
        redis.reset_command_counts();
        quick_start::publish_one(&url, &broker.uri())
            .unwrap_or_else(|e| panic!("quick start over {url}: {e}"));
        let counts = redis.command_counts();
        assert!(
            counts.get("hset").copied().unwrap_or(0) >= 1,
            "over {url}, the store wrote to Redis: {counts:?}"
        );
        assert!(redis.fields(&hash).is_empty(), "over {url}, the acknowledged message left the store");
    }
}

#[test]
fn the_client_is_created_once_redis_comes_up() {
    let mut redis = RedisServer::start();
    let broker = Mosquitto::start();
    redis.kill(); // not up yet: the application started first
    let url = redis.url();
    let uri = broker.uri();
    let creating = std::thread::spawn(move || {
        wait_for_redis::create_client_when_redis_is_up(&url, &uri, 50, Duration::from_millis(100))
            .map(drop)
            .map_err(|e| e.to_string())
    });
    std::thread::sleep(Duration::from_secs(1));
    redis.restart();
    creating.join().expect("no panic").expect("the client is created once Redis is up");
}

/// The deployment guide's `redis.conf`.
fn redis_conf() -> String {
    let start = DEPLOYMENT.find("```text\n# /etc/redis/redis.conf").expect("the guide shows a redis.conf");
    let block = &DEPLOYMENT[start + "```text\n".len()..];
    block[..block.find("\n```").expect("the block ends")].to_owned()
}

/// The value of `name` in a redis.conf, if set.
fn directive(conf: &str, name: &str) -> Option<String> {
    conf.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.to_owned())
    })
}

/// `conf` with `name` set to `value` (replaced where set, else appended).
fn set(conf: &str, name: &str, value: &str) -> String {
    let mut found = false;
    let mut lines: Vec<String> = conf
        .lines()
        .map(|line| match line.split_once(' ') {
            Some((key, _)) if key == name => {
                found = true;
                format!("{name} {value}")
            }
            _ => line.to_owned(),
        })
        .collect();
    if !found {
        lines.push(format!("{name} {value}"));
    }
    lines.join("\n") + "\n"
}

/// The rows of the guide's durability table, each as its `redis.conf` settings.
fn durability_rows() -> Vec<(String, Vec<(String, String)>)> {
    let section = &DEPLOYMENT[DEPLOYMENT.find("## Durability").expect("a durability section")..];
    let section = &section[..section[3..].find("\n## ").expect("a next section") + 3];
    let rows: Vec<_> = section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Setting"))
        .filter_map(|row| {
            let cell = row.split('|').nth(1)?;
            let settings: Vec<(String, String)> = cell
                .split('`')
                .skip(1)
                .step_by(2)
                .filter_map(|s| s.split_once(' ').map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect();
            (!settings.is_empty()).then(|| (cell.trim().to_owned(), settings))
        })
        .collect();
    assert_eq!(rows.len(), 4, "four durability rows: {rows:?}");
    rows
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The guide's redis.conf with `row`'s settings, its paths in `dir` and its port free.
fn conf_for(row: &[(String, String)], dir: &Path, port: u16) -> String {
    let mut conf = redis_conf();
    for (name, value) in row {
        conf = set(&conf, name, value);
    }
    let at = |file: &str| dir.join(file).display().to_string();
    conf = set(&conf, "port", &port.to_string());
    conf = set(&conf, "unixsocket", &at("redis-server.sock"));
    conf = set(&conf, "pidfile", &at("redis-server.pid"));
    conf = set(&conf, "logfile", &at("redis.log"));
    set(&conf, "dir", &dir.display().to_string())
}

#[test]
fn the_deployment_guides_redis_conf_serves_a_store_with_each_durability_row() {
    let redis_server = require_binary("redis-server");
    for (row_name, row) in durability_rows() {
        let dir = tempfile::Builder::new().prefix("pmr-guide-conf-").tempdir().expect("a temp dir");
        let port = free_port();
        let conf_path = dir.path().join("redis.conf");
        std::fs::write(&conf_path, conf_for(&row, dir.path(), port)).expect("write redis.conf");
        let _server = Killed(
            Command::new(&redis_server)
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server"),
        );
        let tcp = format!("redis://127.0.0.1:{port}/0");
        let ready = wait_until(Duration::from_secs(10), || {
            redis::Client::open(tcp.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        let log = || std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default();
        assert!(
            ready,
            "{row_name}: redis-server did not start with the guide's redis.conf; its log:\n{}",
            log()
        );

        let mut admin = redis::Client::open(tcp.as_str()).and_then(|c| c.get_connection()).expect("connect");
        for (name, value) in [("maxmemory-policy", "noeviction"), ("unixsocketperm", "770")]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .chain(row.iter().map(|(n, v)| (n.clone(), v.trim_matches('"').to_owned())))
        {
            let got: Vec<String> =
                redis::cmd("CONFIG").arg("GET").arg(&name).query(&mut admin).expect("CONFIG GET");
            let got = got.get(1).cloned().unwrap_or_default();
            let want = if name == "dir" { dir.path().display().to_string() } else { value };
            assert_eq!(got, want, "{row_name}: {name}");
        }

        let url = if cfg!(feature = "unix-socket") {
            format!("redis+unix://{}", dir.path().join("redis-server.sock").display())
        } else {
            tcp.clone()
        };
        let mut store = RedisPersistence::with_url(&url).expect("a valid URL");
        store
            .open("gateway-17", "127.0.0.1:1883")
            .unwrap_or_else(|e| panic!("{row_name}: open over {url}: {e:?}"));
        store.put("s-1", vec![b"a record"]).expect("put");
        assert_eq!(store.get("s-1").expect("get"), b"a record");
        store.close().expect("close");
        let kept: Vec<Vec<u8>> =
            redis::cmd("HVALS").arg("gateway-17:127.0.0.1:1883").query(&mut admin).expect("HVALS");
        assert_eq!(kept, vec![b"a record".to_vec()], "{row_name}: the record is in Redis");
    }
}
