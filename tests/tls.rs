//! Redis over TLS (`rediss://`, feature `tls`) against a redis-server that
//! speaks only TLS, with certificates made by the test with the `openssl` CLI.
//!
//! The crate takes no certificate option: redis-rs with native-tls trusts the
//! system store, which OpenSSL lets `SSL_CERT_FILE` replace. native-tls reads
//! that variable once per process, so each case runs in a child process (this
//! test binary, re-run with `CHILD_ENV` set) with its own environment.
#![cfg(feature = "tls")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use support::redis_server::TlsFiles;
use support::RedisServer;

const CHILD_ENV: &str = "PMR_TEST_TLS_CHILD";
const TEST_NAME: &str = "store_over_tls_verifies_the_server_with_the_trusted_ca";

fn openssl(dir: &Path, args: &[&str]) {
    let binary = support::require_binary("openssl");
    let output = Command::new(&binary).current_dir(dir).args(args).output().expect("run openssl");
    assert!(output.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// A self-signed CA named `name`: `{name}.crt` and `{name}.key` in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
    dir.join(format!("{name}.crt"))
}

/// A CA and a server certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1) signed by it.
fn make_server_certificates(dir: &Path) -> TlsFiles {
    let ca = make_ca(dir, "test-ca");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "test-ca.crt",
            "-CAkey",
            "test-ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    TlsFiles { cert: dir.join("server.crt"), key: dir.join("server.key"), ca }
}

/// In the child: open a store on `url` and run every operation; prints `worked` or `refused`.
fn child_main(url: &str) -> ! {
    support::init_logging();
    let mut store = RedisPersistence::with_url(url).expect("valid rediss URL");
    // Connecting may send nothing, so a failed handshake can also surface at the first command.
    if store.open("tls-dev", "broker:8883").is_err() || store.put("s-1", vec![b"over ", b"tls"]).is_err() {
        println!("\nrefused");
        std::process::exit(0);
    }
    assert_eq!(store.get("s-1").expect("get"), b"over tls");
    assert_eq!(store.keys().expect("keys"), ["s-1"]);
    assert!(store.monitor().contains("s-1").expect("contains"));
    store.remove("s-1").expect("remove");
    store.put("c-1", vec![b"x"]).expect("put");
    store.clear().expect("clear");
    assert!(store.keys().expect("keys").is_empty());
    println!("\nworked");
    std::process::exit(0);
}

/// Runs the child with `url`, trusting only `trusted_ca`; returns its verdict.
fn run_child(redis: &RedisServer, url: &str, trusted_ca: &Path) -> String {
    let output = Command::new(std::env::current_exe().expect("test binary path"))
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, url)
        .env("SSL_CERT_FILE", trusted_ca)
        .env_remove("SSL_CERT_DIR")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}\nredis log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        redis.log()
    );
    ["worked", "refused"]
        .into_iter()
        .find(|verdict| stdout.lines().any(|l| l.trim() == *verdict))
        .unwrap_or_else(|| panic!("no verdict from the child:\n{stdout}"))
        .to_owned()
}

#[test]
fn store_over_tls_verifies_the_server_with_the_trusted_ca() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
        child_main(&url);
    }
    let certificates = tempfile::Builder::new().prefix("pmr-tls-").tempdir().expect("temp dir");
    let files = make_server_certificates(certificates.path());
    let other_ca = make_ca(certificates.path(), "other-ca");
    let redis = RedisServer::start_tls(files.clone());

    assert_eq!(
        run_child(&redis, &redis.tls_url(), &files.ca),
        "worked",
        "the server's CA is trusted: verified TLS works"
    );
    assert_eq!(
        run_child(&redis, &redis.tls_url(), &other_ca),
        "refused",
        "a server certificate from an untrusted CA must be refused"
    );
    assert_eq!(
        run_child(&redis, &format!("{}#insecure", redis.tls_url()), &other_ca),
        "worked",
        "`#insecure` skips verification (test setups only)"
    );
    let plain = format!("redis://127.0.0.1:{}/0", redis.port());
    assert_eq!(
        run_child(&redis, &plain, &files.ca),
        "refused",
        "plain TCP to a TLS-only port must fail, not hang"
    );
}
