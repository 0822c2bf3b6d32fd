//! An application that starts before Redis: with `Builder::wait_for_redis`,
//! Paho's client creation waits in `open` until Redis answers, then restores
//! what the previous run left (never an open that pretends); past the bound,
//! or for a failure waiting cannot cure, it fails. Real Paho C and
//! redis-server; what is waited for is a log line or Redis, never a clock.

mod support;

use std::thread;
use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::{Error, RedisPersistence};
use support::log_capture;
use support::mqtt::{client, create_options, store_hash};
use support::{free_port, unique_id, wait_until, RedisServer};

fn store(url: &str, wait: Duration) -> RedisPersistence {
    RedisPersistence::builder()
        .url(url)
        .connect_timeout(Duration::from_millis(500))
        .io_timeout(Duration::from_millis(500))
        .wait_for_redis(wait)
        .build()
        .expect("valid")
}

/// A previous run leaves records; Redis saves them and stops; the client is
/// created before Redis starts again on the same port and socket.
fn created_before_redis_is_up_restores_the_previous_run(url_of: fn(&RedisServer) -> String) {
    log_capture::install();
    let mut redis = RedisServer::start();
    let url = url_of(&redis);
    // No broker: the messages stay queued, each one a command record.
    let server_uri = format!("tcp://127.0.0.1:{}", free_port());
    let client_id = unique_id("boot");
    let previous = client(&server_uri, &client_id, store(&url, Duration::ZERO));
    for n in 0..5 {
        previous.try_publish(mqtt::Message::new("boot/order", format!("m{n}"), 1)).expect("queued");
    }
    drop(previous);
    let hash = store_hash(&client_id, &server_uri);
    let fields = redis.fields(&hash);
    assert_eq!(fields.len(), 5, "the previous run's records: {fields:?}");
    let () = redis::cmd("SAVE").query(&mut redis.connection()).expect("SAVE");
    redis.kill();

    let store = store(&url, Duration::from_secs(120));
    let kept = store.monitor();
    let address = kept.config().address();
    let creating =
        thread::spawn(move || mqtt::AsyncClient::new(create_options(&server_uri, &client_id, store)));
    // `open` found no Redis, said so, and waits.
    let waiting =
        wait_until(Duration::from_secs(60), || log_capture::logged("INFO", &["not up yet", &address]));
    assert!(waiting, "open logs that it waits for {address}: {:#?}", log_capture::lines());
    assert_eq!(kept.hash_name(), None, "nothing is open while Redis is down");

    redis.restart(); // same port, socket and dir: it loads what it saved
    let restored = creating.join().expect("no panic").expect("created once Redis answers");
    assert_eq!(kept.hash_name(), Some(hash), "{:?}", kept.last_error());
    for field in &fields {
        assert_eq!(kept.contains(field), Some(true), "{field} restored from Redis");
    }
    assert!(log_capture::logged("INFO", &["answered after", &address]), "{:#?}", log_capture::lines());
    assert!(kept.last_error().is_none(), "{:?}", kept.last_error());
    drop(restored);
}

#[test]
fn over_tcp_a_client_created_before_redis_starts_restores_the_previous_run() {
    created_before_redis_is_up_restores_the_previous_run(RedisServer::url);
}

#[cfg(feature = "unix-socket")]
#[test]
fn over_the_unix_socket_a_client_created_before_redis_starts_restores_the_previous_run() {
    created_before_redis_is_up_restores_the_previous_run(RedisServer::unix_url);
}

#[test]
fn past_the_bound_creation_fails_with_the_cause() {
    log_capture::install();
    // Nothing listens on this port.
    let store = store(&format!("redis://127.0.0.1:{}/0", free_port()), Duration::from_millis(300));
    let kept = store.monitor();
    let address = kept.config().address();
    let created = mqtt::AsyncClient::new(create_options("tcp://127.0.0.1:1883", &unique_id("never"), store));
    assert!(matches!(created, Err(mqtt::Error::PersistenceError)), "no client without its store");
    let cause = kept.last_error().expect("the cause");
    assert!(matches!(*cause, Error::Connect { .. }), "{cause:?}");
    assert!(log_capture::logged("INFO", &["did not answer within wait_for_redis", &address]));
    assert_eq!(kept.hash_name(), None);
}

#[test]
fn a_failure_waiting_cannot_cure_fails_at_once() {
    log_capture::install();
    let redis = RedisServer::start();
    redis.require_password("right-pw");
    let url = format!("redis://:wrong-pw@127.0.0.1:{}/0", redis.port());
    let store = store(&url, Duration::from_secs(120));
    let kept = store.monitor();
    let created = mqtt::AsyncClient::new(create_options("tcp://127.0.0.1:1883", &unique_id("auth"), store));
    assert!(matches!(created, Err(mqtt::Error::PersistenceError)));
    let cause = kept.last_error().expect("the cause");
    assert!(matches!(*cause, Error::Connect { .. }), "{cause:?}");
    assert!(
        !log_capture::logged("INFO", &["not up yet", &kept.config().address()]),
        "a wrong password is not waited out"
    );
}
