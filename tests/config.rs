//! Configuration: URL forms, options, and clear errors for bad input.

use std::time::Duration;

use paho_mqtt_redis::{Error, RedisPersistence, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT};

/// What a URL must turn into: `Ok((address, db))` or an error whose message contains the text.
type Expected = Result<(&'static str, i64), &'static str>;

fn check(url: &str, expected: Expected) {
    let result = RedisPersistence::with_url(url);
    match (result, expected) {
        (Ok(p), Ok((address, db))) => {
            assert_eq!(p.config().address(), address, "address of {url}");
            assert_eq!(p.config().db(), db, "db of {url}");
        }
        (Err(e), Err(text)) => {
            let message = e.to_string();
            assert!(message.contains(text), "error for {url:?} should mention {text:?}: {message}");
        }
        (Ok(p), Err(text)) => {
            panic!("{url:?} was accepted ({:?}), expected an error mentioning {text:?}", p.config())
        }
        (Err(e), Ok(_)) => panic!("{url:?} was rejected: {e}"),
    }
}

fn check_all(table: &[(&str, Expected)]) {
    for (url, expected) in table {
        check(url, *expected);
    }
}

#[test]
fn tcp_urls() {
    let table: &[(&str, Expected)] = &[
        ("redis://127.0.0.1", Ok(("127.0.0.1:6379", 0))),
        ("redis://127.0.0.1:6380/3", Ok(("127.0.0.1:6380", 3))),
        ("redis://localhost/15", Ok(("localhost:6379", 15))),
        ("redis://user:s3cret@127.0.0.1:7000/1", Ok(("127.0.0.1:7000", 1))),
        ("redis://:s3cret@127.0.0.1", Ok(("127.0.0.1:6379", 0))),
        ("redis://[::1]:6379", Ok(("::1:6379", 0))),
    ];
    check_all(table);
}

#[test]
fn bad_urls_are_rejected_with_a_reason() {
    let table: &[(&str, Expected)] = &[
        ("", Err("invalid Redis URL")),
        ("127.0.0.1:6379", Err("invalid Redis URL")),
        ("http://127.0.0.1", Err("invalid Redis URL")),
        ("redis://127.0.0.1/not-a-db", Err("Invalid database number")),
        ("redis://127.0.0.1:99999", Err("invalid Redis URL")),
        ("redis://0.0.0.0", Err("wildcard")),
        ("redis://", Err("invalid Redis URL")),
        ("redis://127.0.0.1/?protocol=9", Err("Invalid protocol version")),
    ];
    check_all(table);
}

/// What a URL does not parse at all should say: the scheme was right, the rest was not.
const DOES_NOT_PARSE: &str = "the URL does not parse";

#[test]
fn garbage_urls_are_rejected_with_a_reason() {
    let table: &[(&str, Expected)] = &[
        (" ", Err("not a URL with a redis://")),
        ("\t\n", Err("not a URL with a redis://")),
        ("rédis://127.0.0.1", Err("not a URL with a redis://")),
        ("//127.0.0.1", Err("not a URL with a redis://")),
        ("redis:// 127.0.0.1", Err(DOES_NOT_PARSE)),
        ("redis://127.0.0.1:6379 /0", Err(DOES_NOT_PARSE)),
        ("redis://a b", Err(DOES_NOT_PARSE)),
        ("redis://127.0.0.1:65536", Err(DOES_NOT_PARSE)),
        ("redis://127.0.0.1:-1", Err(DOES_NOT_PARSE)),
        ("redis://127.0.0.1:99999999999999999999", Err(DOES_NOT_PARSE)),
        ("redis://127.0.0.1:0", Err("port 0")),
        ("redis://:6379", Err(DOES_NOT_PARSE)),
        ("redis://user@", Err(DOES_NOT_PARSE)),
        ("redis://[::1", Err(DOES_NOT_PARSE)),
        ("redis://[zz::1]", Err(DOES_NOT_PARSE)),
        ("redis:///0", Err("Missing hostname")),
        ("redis://:@", Err("Missing hostname")),
        ("redis:127.0.0.1", Err("Missing hostname")),
        ("redis://127.0.0.1/-1", Err("must be 0 or more")),
        ("redis://127.0.0.1/99999999999999999999", Err("Invalid database number")),
        ("redis://127.0.0.1/1/2", Err("Invalid database number")),
        ("redis://127.0.0.1/0x1", Err("Invalid database number")),
        ("redis://127.0.0.1/%00", Err("Invalid database number")),
        ("redis://127.0.0.1/?foo=bar", Err("unknown query parameter `foo`")),
        ("redis://127.0.0.1/0?db=3", Err("unknown query parameter `db`")),
        ("redis://127.0.0.1/?&&==", Err("a query parameter without a name")),
        ("redis://127.0.0.1/?protocol=", Err("Invalid protocol version")),
        ("redis://user:p%FFw@127.0.0.1", Err("Password is not valid UTF-8")),
        ("redis://u%FF:pw@127.0.0.1", Err("Username is not valid UTF-8")),
    ];
    check_all(table);
}

#[test]
fn odd_but_valid_urls_are_accepted_as_the_url_standard_reads_them() {
    let table: &[(&str, Expected)] = &[
        ("  redis://127.0.0.1  ", Ok(("127.0.0.1:6379", 0))), // surrounding blanks are trimmed
        ("REDIS://127.0.0.1", Ok(("127.0.0.1:6379", 0))),
        ("redis://:@127.0.0.1", Ok(("127.0.0.1:6379", 0))), // empty password: none
        ("redis://127.0.0.1:65535/15", Ok(("127.0.0.1:65535", 15))),
        ("redis://127.0.0.1/#fragment", Ok(("127.0.0.1:6379", 0))),
        ("redis://127.0.0.1/?protocol=resp3", Ok(("127.0.0.1:6379", 0))),
        // Not resolvable, which `open` reports; the parser percent-encodes it.
        ("redis://ünïcødé/0", Ok(("%C3%BCn%C3%AFc%C3%B8d%C3%A9:6379", 0))),
    ];
    check_all(table);
}

#[test]
fn garbage_never_shows_a_password_in_the_error() {
    for url in [
        "redis://user:SECRETPW@127.0.0.1:65536",
        "redis://user:SECRETPW@127.0.0.1/-1",
        "redis://user:SECRETPW@127.0.0.1/?foo=SECRETPW",
        "redis://user:SECRETPW@[::1",
        "redis://user:SECRETPW@127.0.0.1/x",
    ] {
        let error = RedisPersistence::with_url(url).expect_err("garbage");
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("SECRETPW"), "a password reached the error for {url:?}: {shown}");
    }
}

#[test]
fn unix_socket_urls_need_the_unix_socket_feature() {
    let table: &[(&str, Expected)] = if cfg!(feature = "unix-socket") {
        &[
            ("redis+unix:///run/redis/redis.sock", Ok(("/run/redis/redis.sock", 0))),
            ("redis+unix:///run/redis/redis.sock?db=4", Ok(("/run/redis/redis.sock", 4))),
            ("unix:///tmp/r.sock", Ok(("/tmp/r.sock", 0))),
            ("unix:///tmp/r.sock?db=x", Err("Invalid database number")),
            ("unix:///tmp/r.sock?db=-1", Err("must be 0 or more")),
            ("unix:///tmp/r.sock?user=u&pass=p&db=2&protocol=3", Ok(("/tmp/r.sock", 2))),
            ("unix:///tmp/r.sock?dbx=2", Err("unknown query parameter `dbx`")),
            ("redis+unix://", Err("Missing path")),
            ("redis+unix://host/tmp/x", Err("Missing path")),
        ]
    } else {
        &[
            ("redis+unix:///run/redis/redis.sock", Err("needs the `unix-socket` feature")),
            ("unix:///tmp/r.sock", Err("needs the `unix-socket` feature")),
        ]
    };
    check_all(table);
}

#[test]
fn tls_urls_need_the_tls_feature() {
    let expected: Expected =
        if cfg!(feature = "tls") { Ok(("127.0.0.1:6380", 0)) } else { Err("needs the `tls` feature") };
    check("rediss://127.0.0.1:6380", expected);
    if cfg!(feature = "tls") {
        check("rediss://127.0.0.1:6380/#insecure", Ok(("127.0.0.1:6380", 0)));
        check("rediss://127.0.0.1:6380/#verify", Err("only #insecure is supported"));
        check("rediss://127.0.0.1:0", Err("port 0"));
    }
}

#[test]
fn feature_errors_name_the_feature() {
    if cfg!(feature = "tls") {
        return check("rediss://127.0.0.1", Ok(("127.0.0.1:6379", 0)));
    }
    match RedisPersistence::with_url("rediss://127.0.0.1") {
        Err(Error::FeatureDisabled { feature, .. }) => assert_eq!(feature, "tls"),
        other => panic!("expected FeatureDisabled, got {other:?}"),
    }
}

#[test]
fn new_targets_the_local_default_redis() {
    let p = RedisPersistence::new();
    assert_eq!(p.config().address(), "127.0.0.1:6379");
    assert_eq!(p.config().db(), 0);
    assert_eq!(p.config().key_prefix(), "");
    assert_eq!(p.config().connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(p.config().io_timeout(), DEFAULT_IO_TIMEOUT);
    assert_eq!(p.hash_name(), None, "nothing is open before Paho calls open");
}

#[test]
fn builder_sets_every_option() {
    let p = RedisPersistence::builder()
        .url("redis://127.0.0.1:6390/2")
        .key_prefix("gw:")
        .connect_timeout(Duration::from_millis(750))
        .io_timeout(Duration::from_millis(250))
        .build()
        .expect("valid options");
    let config = p.config();
    assert_eq!(config.address(), "127.0.0.1:6390");
    assert_eq!(config.db(), 2);
    assert_eq!(config.connect_timeout(), Duration::from_millis(750));
    assert_eq!(config.io_timeout(), Duration::from_millis(250));
    assert_eq!(config.hash_name("dev-1", "broker:1883"), "gw:dev-1:broker:1883");
}

#[test]
fn without_a_prefix_the_hash_is_named_as_in_0_3() {
    let p = RedisPersistence::new();
    assert_eq!(p.config().hash_name("dev-1", "localhost:1883"), "dev-1:localhost:1883");
}

#[test]
fn zero_timeouts_are_rejected() {
    for (builder, name) in [
        (RedisPersistence::builder().io_timeout(Duration::ZERO), "io_timeout"),
        (RedisPersistence::builder().connect_timeout(Duration::ZERO), "connect_timeout"),
        (RedisPersistence::builder().lease(Duration::ZERO), "lease"),
    ] {
        match builder.build() {
            Err(e @ Error::InvalidOption { option, .. }) => {
                assert_eq!(option, name);
                assert_eq!(e.to_string(), format!("invalid {name}: must be greater than zero"));
            }
            other => panic!("expected InvalidOption, got {other:?}"),
        }
    }
}

#[test]
fn debug_output_never_shows_a_password() {
    let url = "redis://gateway:s3cret-pw@127.0.0.1:6379/0";
    let p = RedisPersistence::with_url(url).expect("valid");
    let shown = format!("{p:?} {:?} {:#?}", p.config(), RedisPersistence::builder().url(url));
    assert!(!shown.contains("s3cret-pw"), "password leaked: {shown}");
    assert!(shown.contains("<redacted>"), "a password is there, and Debug says so: {shown}");
    assert!(shown.contains("gateway"), "the user name is not secret: {shown}");

    let bad = RedisPersistence::with_url("redis://gateway:s3cret-pw@127.0.0.1/x").expect_err("bad db");
    assert!(!format!("{bad} {bad:?}").contains("s3cret-pw"), "password leaked in an error: {bad:?}");
}
