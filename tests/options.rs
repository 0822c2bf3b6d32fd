//! `Options` (feature `serde`): a store's settings read from a configuration
//! file, validated by the builder, with a real redis-server behind the store.
#![cfg(feature = "serde")]

mod support;

use std::time::Duration;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::{Error, MqttVersion, Options, RedisPersistence, DEFAULT_IO_TIMEOUT, DEFAULT_LEASE};
use support::RedisServer;

fn parse(json: &str) -> Options {
    serde_json::from_str(json).expect("valid options")
}

#[test]
fn every_option_is_read_and_the_store_works() {
    let redis = RedisServer::start();
    let json = format!(
        r#"{{
            "url": "{}",
            "key_prefix": "gw:",
            "connect_timeout_ms": 700,
            "io_timeout_ms": 250,
            "max_store_bytes": 4096,
            "defer_qos1_removals": true,
            "mqtt_version": 5,
            "lease_ms": 3000
        }}"#,
        redis.url()
    );
    let mut store = parse(&json).build().expect("valid");
    let config = store.config();
    assert_eq!(config.key_prefix(), "gw:");
    assert_eq!(config.connect_timeout(), Duration::from_millis(700));
    assert_eq!(config.io_timeout(), Duration::from_millis(250));
    assert_eq!(config.max_store_bytes(), Some(4096));
    assert!(config.defer_qos1_removals());
    assert_eq!(config.mqtt_version(), MqttVersion::V5);
    assert_eq!(config.lease(), Duration::from_secs(3));
    assert_eq!(config.address(), format!("127.0.0.1:{}", redis.port()));

    store.open("dev", "broker:1883").expect("open");
    store.put("s-1", vec![support::records::valid("s-1", b"x").as_slice()]).expect("put");
    assert_eq!(store.hash_name().as_deref(), Some("gw:dev:broker:1883"));
    store.close().expect("close");
}

#[test]
fn an_empty_file_is_the_builders_defaults() {
    let config = parse("{}").into_builder().into_config().expect("valid");
    let defaults = RedisPersistence::new();
    assert_eq!(format!("{config:?}"), format!("{:?}", defaults.config()));
    assert_eq!(config.io_timeout(), DEFAULT_IO_TIMEOUT);
    assert_eq!(config.lease(), DEFAULT_LEASE);
}

#[test]
fn an_unknown_field_is_refused() {
    let typo = serde_json::from_str::<Options>(r#"{"io_timeout": 500}"#).expect_err("unknown field");
    assert!(typo.to_string().contains("unknown field `io_timeout`"), "{typo}");
}

#[test]
fn values_are_validated_by_the_builder() {
    let zero = parse(r#"{"io_timeout_ms": 0}"#).build().expect_err("zero timeout");
    assert!(matches!(zero, Error::InvalidOption { option: "io_timeout", .. }), "{zero:?}");
    let version = parse(r#"{"mqtt_version": 6}"#).build().expect_err("no MQTT 6");
    assert!(matches!(version, Error::InvalidOption { option: "mqtt_version", .. }), "{version:?}");
    let url = parse(r#"{"url": "http://example.com"}"#).build().expect_err("not a Redis URL");
    assert!(matches!(url, Error::InvalidUrl { .. }), "{url:?}");
}

#[test]
fn debug_never_shows_the_url() {
    let options = parse(r#"{"url": "redis://gateway:s3cret-pw@127.0.0.1:6379/0"}"#);
    let shown = format!("{options:?} {options:#?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(shown.contains("<url>"), "{shown}");
}
