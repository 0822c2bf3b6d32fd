//! One owner per store (the lease `{hash}:owner`), with real processes: a
//! second process is refused while the first lives, a killed owner's store
//! opens again at once on the same host, another host's lease is waited out
//! (or refused while renewed), a paused owner is fenced once a new one has
//! taken over, and the lease costs no Redis command per message.
//!
//! The owners are this test binary, re-run with `CHILD_ENV` set: it prints
//! `ready` once its messages are in the store, then follows the lines the
//! parent writes to its stdin.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;
use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use support::log_capture;
use support::mqtt::{client, connect, persistent_session, store_hash, Subscriber};
use support::redis_server::send_signal;
use support::{Mosquitto, RedisServer};

const CHILD_ENV: &str = "PMR_TEST_OWNER_CHILD";
/// Messages each owner publishes before it reports `ready`.
const MESSAGES: usize = 20;

/// An owner process: publishes `MESSAGES` QoS 1 messages with no broker
/// reachable (so they stay in the store), prints `ready`, then, per line on
/// stdin: `connect` (deliver them, print `delivered` once the store is
/// empty), `more` (publish `MESSAGES` more, then print the lease's gauge and
/// the records held in memory).
fn run_owner(fields: &[String]) -> ! {
    let [redis_url, broker, client_id, topic, lease_ms] = fields else { panic!("child fields: {fields:?}") };
    log_capture::install();
    let lease = Duration::from_millis(lease_ms.parse().expect("lease ms"));
    let store = RedisPersistence::builder().url(redis_url).lease(lease).build().expect("valid");
    let kept = store.monitor();
    let publisher = client(broker, client_id, store);
    let mut out = std::io::stdout().lock();
    let publish = |out: &mut std::io::StdoutLock<'_>, from: usize| {
        for id in from..from + MESSAGES {
            publisher.try_publish(mqtt::Message::new(topic, id.to_string(), 1)).expect("accepted");
            writeln!(out, "accepted {id}").expect("stdout");
        }
    };
    publish(&mut out, 0);
    writeln!(out, "ready").and_then(|()| out.flush()).expect("stdout");
    for line in std::io::stdin().lock().lines() {
        match line.expect("stdin").trim() {
            "connect" => {
                connect(&publisher, persistent_session());
                let hash = kept.hash_name().expect("open");
                let redis = redis::Client::open(redis_url.as_str()).expect("url");
                let mut conn = redis.get_connection().expect("connect");
                let emptied = support::wait_until(Duration::from_secs(30), || {
                    redis::cmd("HLEN").arg(&hash).query::<usize>(&mut conn).is_ok_and(|n| n == 0)
                });
                writeln!(out, "delivered {emptied}").and_then(|()| out.flush()).expect("stdout");
            }
            "more" => {
                publish(&mut out, MESSAGES);
                // The renewal that finds the lease lost may still be under way.
                support::wait_until(Duration::from_secs(5), || kept.stats().lease_lost == 1);
                let stats = kept.stats();
                let lost_logged = log_capture::lines().iter().filter(|l| l.contains("is lost to")).count();
                writeln!(
                    out,
                    "more lease_lost={} unwritten={} lost_logged={lost_logged}",
                    stats.lease_lost,
                    kept.unwritten()
                )
                .and_then(|()| out.flush())
                .expect("stdout");
            }
            _ => break,
        }
    }
    // Paho closes the store when the client is dropped: the lease is released.
    drop(out);
    let _ = publisher.disconnect(None).wait_for(Duration::from_secs(5));
    drop(publisher);
    std::process::exit(0);
}

/// A running owner process.
struct Owner {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Owner {
    fn start(
        test: &str,
        redis_url: &str,
        broker: &str,
        client_id: &str,
        topic: &str,
        lease: Duration,
    ) -> Self {
        let lease_ms = lease.as_millis().to_string();
        let value = support::encode_child_fields(&[redis_url, broker, client_id, topic, &lease_ms]);
        let mut child = support::child_command(test, CHILD_ENV, &value)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the owner");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let owner = Self { child, stdin, lines };
        owner.expect("ready", Duration::from_secs(30));
        owner
    }

    /// Waits for a line starting with `prefix`; returns it.
    fn expect(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!("the owner did not print `{prefix}` within {timeout:?}"),
            }
        }
    }

    fn tell(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush()).expect("owner's stdin");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ =
            Command::new("kill").arg("-CONT").arg(self.child.id().to_string()).stderr(Stdio::null()).status();
        self.kill();
    }
}

use std::process::Command;

fn child_fields() -> Option<Vec<String>> {
    support::child_fields(CHILD_ENV)
}

fn lease_of(hash: &str) -> String {
    paho_mqtt_redis::Config::lease_name(hash)
}

/// The ids delivered on `subscriber` until all `0..expected` arrived (or 30 s).
fn delivered(subscriber: &Subscriber, expected: usize) -> std::collections::BTreeSet<usize> {
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < expected && Instant::now() < deadline {
        if let Some(message) = subscriber.next(Duration::from_millis(100)) {
            if let Ok(id) = message.payload_str().parse::<usize>() {
                seen.insert(id);
            }
        }
    }
    seen
}

/// (1) While the first process lives, a second one's client creation fails,
/// its log names the owner (host, pid), it writes nothing, and every message
/// the first accepted is delivered afterwards.
#[test]
fn a_second_process_is_refused_while_the_first_lives_and_nothing_is_lost() {
    if let Some(fields) = child_fields() {
        run_owner(&fields);
    }
    log_capture::install();
    let (redis, broker) = (RedisServer::start(), Mosquitto::start());
    let (id, topic) = (support::unique_id("owner-two"), support::unique_id("owner/two"));
    let hash = store_hash(&id, &broker.uri());
    let subscriber = Subscriber::start(&broker.uri(), &topic);
    let mut first = Owner::start(
        "a_second_process_is_refused_while_the_first_lives_and_nothing_is_lost",
        &redis.url(),
        &broker.uri(),
        &id,
        &topic,
        Duration::from_secs(10),
    );
    let before = redis.fields(&hash);
    assert_eq!(before.len(), MESSAGES, "{before:?}");

    let second = mqtt::AsyncClient::new(support::mqtt::create_options(
        &broker.uri(),
        &id,
        RedisPersistence::with_url(&redis.url()).expect("url"),
    ));
    assert!(second.is_err(), "the second client must not be created");
    let refusal = log_capture::lines_here().into_iter().find(|l| l.contains("in use by")).expect("logged");
    assert!(refusal.contains(&format!("pid {}", first.pid())), "{refusal}");
    assert!(refusal.contains("on host "), "{refusal}");
    assert_eq!(redis.fields(&hash), before, "the second process wrote nothing");

    first.tell("connect");
    assert_eq!(first.expect("delivered", Duration::from_secs(40)), "delivered true");
    let seen = delivered(&subscriber, MESSAGES);
    assert_eq!(seen.len(), MESSAGES, "delivered: {seen:?}");
    first.tell("quit");
    let _ = first.child.wait();
    let lease: Option<String> =
        redis::cmd("GET").arg(lease_of(&hash)).query(&mut redis.connection()).expect("GET");
    assert_eq!(lease, None, "released when the first client closed its store");
}

/// (2) kill -9 of the owner: a new process on this host opens the store at
/// once (the dead owner's pid is gone), well within the 10 s lease, and
/// delivers what the dead one had accepted.
#[test]
fn a_killed_owner_is_taken_over_at_once_on_the_same_host() {
    if let Some(fields) = child_fields() {
        run_owner(&fields);
    }
    log_capture::install();
    let (redis, broker) = (RedisServer::start(), Mosquitto::start());
    let (id, topic) = (support::unique_id("owner-kill"), support::unique_id("owner/kill"));
    let hash = store_hash(&id, &broker.uri());
    let subscriber = Subscriber::start(&broker.uri(), &topic);
    let mut first = Owner::start(
        "a_killed_owner_is_taken_over_at_once_on_the_same_host",
        &redis.url(),
        &broker.uri(),
        &id,
        &topic,
        Duration::from_secs(10),
    );
    let dead_pid = first.pid();
    first.kill();
    let held: Option<String> =
        redis::cmd("GET").arg(lease_of(&hash)).query(&mut redis.connection()).expect("GET");
    assert!(held.is_some_and(|held| held.contains(&format!("pid={dead_pid} "))), "the dead owner's lease");

    let started = Instant::now();
    let store = RedisPersistence::with_url(&redis.url()).expect("url");
    let restarted = client(&broker.uri(), &id, store);
    let took = started.elapsed();
    // A bound far below the lease (10 s), not a measurement.
    assert!(took < Duration::from_secs(5), "took {took:?}: it must not wait out the lease");
    let taken = log_capture::lines_here().into_iter().find(|l| l.contains("over from")).expect("logged");
    assert!(taken.contains(&format!("pid {dead_pid}")), "{taken}");
    connect(&restarted, persistent_session());
    let seen = delivered(&subscriber, MESSAGES);
    assert_eq!(seen.len(), MESSAGES, "delivered: {seen:?}");
    let _ = restarted.disconnect(None).wait_for(Duration::from_secs(5));
}

/// (3) A lease of a process on another host (another boot id) cannot be
/// looked up: `open` waits it out, and succeeds once it expires, within the
/// lease plus about a second; while it is renewed, `open` fails with InUse
/// naming it.
#[test]
fn another_hosts_lease_is_waited_out_unless_it_is_renewed() {
    log_capture::install();
    let redis = RedisServer::start();
    let lease = Duration::from_secs(2);
    let planted = support::lease_value(4242, Some("another-boot-id"));
    let build = || RedisPersistence::builder().url(redis.url()).lease(lease).build().expect("valid");

    // Not renewed: taken once it expires.
    let key = lease_of("waited:broker:1883");
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(&planted)
        .arg("PX")
        .arg(2_000)
        .query(&mut redis.connection())
        .expect("SET");
    let started = Instant::now();
    let mut store = build();
    store.open("waited", "broker:1883").expect("open once the lease expired");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1_500), "it waited for the lease: {waited:?}");
    assert!(waited < lease + Duration::from_millis(1_500), "within the lease and about a second: {waited:?}");
    store.close().expect("close");

    // Renewed by its owner meanwhile: alive, refused.
    let key = lease_of("renewed:broker:1883");
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(&planted)
        .arg("PX")
        .arg(2_000)
        .query(&mut redis.connection())
        .expect("SET");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let (stop, key, mut conn) = (stop.clone(), key.clone(), redis.connection());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _: i64 = redis::cmd("PEXPIRE").arg(&key).arg(2_000).query(&mut conn).expect("PEXPIRE");
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let started = Instant::now();
    let mut refused = build();
    assert!(refused.open("renewed", "broker:1883").is_err(), "a renewed lease is alive");
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    renewer.join().expect("renewer");
    assert!(took < lease + Duration::from_millis(1_500), "bounded: {took:?}");
    let named = log_capture::lines_here().into_iter().find(|l| l.contains("in use by")).expect("logged");
    assert!(named.contains("pid 4242 on host planted-host"), "{named}");
}

/// (4) An owner paused (SIGSTOP) past its lease, a new owner that takes the
/// store over and writes, then SIGCONT: the old owner is fenced, its later
/// writes never reach Redis (the new owner's records are intact), and it
/// reports the fence in its stats and, once, in its log.
#[test]
fn a_paused_owner_is_fenced_once_a_new_owner_took_over() {
    if let Some(fields) = child_fields() {
        run_owner(&fields);
    }
    let redis = RedisServer::start();
    // No broker listens here: the messages stay in the store.
    let broker = format!("tcp://127.0.0.1:{}", support::free_port());
    let (id, topic) = (support::unique_id("owner-pause"), support::unique_id("owner/pause"));
    let hash = store_hash(&id, &broker);
    let lease = Duration::from_secs(1);
    let mut old = Owner::start(
        "a_paused_owner_is_fenced_once_a_new_owner_took_over",
        &redis.url(),
        &broker,
        &id,
        &topic,
        lease,
    );
    send_signal(old.pid(), "-STOP");
    // Past the lease: Redis expires it.
    let key = lease_of(&hash);
    let expired = support::wait_until(Duration::from_secs(5), || {
        redis::cmd("EXISTS").arg(&key).query::<i64>(&mut redis.connection()).is_ok_and(|n| n == 0)
    });
    assert!(expired, "the paused owner's lease expires");

    // The new owner: a store of this process, writing the keys the old one will write next.
    let mut new = RedisPersistence::builder().url(redis.url()).lease(lease).build().expect("valid");
    new.open(&id, broker.trim_start_matches("tcp://")).expect("the new owner opens");
    let ours: Vec<String> = (MESSAGES + 1..=2 * MESSAGES + 1).map(|n| format!("c-{n}")).collect();
    for key in &ours {
        new.put(key, vec![b"new owner"]).expect("put");
    }
    let before: Vec<(String, Vec<u8>)> =
        redis::cmd("HGETALL").arg(&hash).query(&mut redis.connection()).expect("HGETALL");

    send_signal(old.pid(), "-CONT");
    old.tell("more");
    let report = old.expect("more", Duration::from_secs(20));
    assert!(report.contains("lease_lost=1"), "{report}");
    assert!(report.contains(&format!("unwritten={MESSAGES}")), "kept in memory: {report}");
    assert!(report.contains("lost_logged=1"), "logged once: {report}");
    let after: Vec<(String, Vec<u8>)> =
        redis::cmd("HGETALL").arg(&hash).query(&mut redis.connection()).expect("HGETALL");
    assert_eq!(after, before, "the old owner wrote nothing after it was fenced");
    for key in &ours {
        let value: Vec<u8> =
            redis::cmd("HGET").arg(&hash).arg(key).query(&mut redis.connection()).expect("HGET");
        assert_eq!(value, b"new owner", "{key}");
    }
    assert_eq!(new.stats().lease_lost, 0, "the new owner keeps its lease");
    old.kill();
    new.close().expect("close");
}

/// (5) The lease costs no Redis command per message: over N puts and
/// removals the only commands besides the store's `HSET`s and `HDEL`s are
/// the lease's renewals (one `EVALSHA` per third of the lease) and its
/// release at close.
#[test]
fn the_lease_costs_no_command_per_message() {
    let redis = RedisServer::start();
    let lease = Duration::from_millis(600);
    let mut store = RedisPersistence::builder().url(redis.url()).lease(lease).build().expect("valid");
    store.open("counted", "broker:1883").expect("open");
    redis.reset_command_counts();
    const N: usize = 3_000;
    let started = Instant::now();
    for n in 0..N {
        let key = format!("s-{n}");
        store.put(&key, vec![b"payload"]).expect("put");
        store.remove(&key).expect("remove");
    }
    let elapsed = started.elapsed();
    store.close().expect("close");
    let counts = redis.command_counts();
    let count = |name: &str| counts.get(name).copied().unwrap_or(0);
    assert_eq!(count("hset"), N as u64, "{counts:?}");
    assert_eq!(count("hdel"), N as u64, "{counts:?}");
    // A renewal every 200 ms and the release at close, each an EVALSHA
    // running GET and PEXPIRE, or GET and DEL (Redis counts a script's
    // commands too); the first EVALSHA of each script is refused (NOSCRIPT),
    // loaded and sent again. A bound from the elapsed time, not a timing.
    let renewals = u64::try_from(elapsed.as_millis() / 200).expect("small") + 1;
    let scripts = count("script|load");
    assert!(scripts <= 2, "{counts:?}");
    assert!(count("evalsha") <= renewals + 1 + scripts, "{elapsed:?}: {counts:?}");
    assert!(count("pexpire") <= renewals && count("del") <= 1, "{counts:?}");
    assert!(count("get") <= renewals + 1, "{counts:?}");
    let allowed = ["hset", "hdel", "evalsha", "script|load", "get", "pexpire", "del"];
    let others: u64 =
        counts.iter().filter(|(name, _)| !allowed.contains(&name.as_str())).map(|(_, n)| n).sum();
    assert_eq!(others, 0, "nothing else: {counts:?}");
    eprintln!("{N} messages in {elapsed:?}: {counts:?}");
}
