//! The test harness: real servers started per test, and the helpers every test file shares.
//!
//! Each test file includes this module with `mod support;` and uses only part
//! of it, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod legacy;
pub mod log_capture;
pub mod model;
pub mod mosquitto;
pub mod mqtt;
pub mod records;
pub mod redis_server;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use mosquitto::Mosquitto;
pub use redis_server::RedisServer;

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago, and that no
/// other test of this process was given. Tests run in parallel: two servers
/// given the same port leave one test talking to the other's server, which
/// fails it when the other test ends (our reading of one CI failure, where
/// `open` failed in the middle of the contract suite on a healthy Redis).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    // Held until a new port turns up, so that the kernel cannot offer them again meanwhile.
    let mut held = Vec::new();
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1");
        let port = listener.local_addr().expect("local address of a bound listener").port();
        if given.insert(port) {
            return port;
        }
        held.push(listener);
    }
}

/// The path of `name`, searched on PATH and in the sbin directories where
/// Debian puts daemons; panics with the fix when it is missing.
pub fn require_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates =
        std::env::split_paths(&path).chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    for dir in candidates {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` was not found on PATH or in /usr/sbin: these tests run a real {name}. \
         Run scripts/test.sh, which installs it (apt-get install redis-server mosquitto)."
    );
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A client id no other test uses, so tests sharing a server stay apart.
pub fn unique_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Routes the crate's `log` output to the test's captured output (`RUST_LOG=debug` to see it).
pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// The seed of a randomised test: `$var` when set (to replay a failure), else the clock.
/// Print it in every failure message.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(text) => text.trim().parse().unwrap_or_else(|e| panic!("{var}={text:?} is not a u64: {e}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    }
}

/// SplitMix64: a tiny, deterministic mixer, so one seed gives the same sequence on every machine.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Names the program that runs this test binary on this machine, such as
/// `qemu-arm -L /usr/arm-linux-gnueabihf`, when it cannot run by itself.
pub const RUNNER_ENV: &str = "PMR_TEST_RUNNER";

/// A command that runs this test binary again, as a child process.
///
/// Under cargo's target runner (qemu-user without binfmt_misc) the kernel
/// cannot execute a foreign binary, so the child is started through the
/// program named by `PMR_TEST_RUNNER` (words split on whitespace), which the
/// runner of `.cargo/config.toml`, `scripts/qemu-run.sh`, sets. Unset, the
/// binary is executed directly.
pub fn this_test_binary() -> Command {
    let exe = std::env::current_exe().expect("path of the running test binary");
    let runner = std::env::var(RUNNER_ENV).unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(exe);
            command
        }
        None => Command::new(exe),
    }
}

/// Runs `command` to completion. When the binary could not be executed at
/// all (the kernel refused it, or the spawn failed with exit status 126 or
/// 127), fails with the fix instead of a confusing assertion later.
pub fn output_of(command: &mut Command) -> std::process::Output {
    let hint = || {
        format!(
            "is this test binary for another architecture? Set {RUNNER_ENV} to the emulator \
             that runs it, such as `qemu-aarch64 -L /usr/aarch64-linux-gnu` (scripts/qemu-run.sh does)"
        )
    };
    let output =
        command.output().unwrap_or_else(|error| panic!("cannot run {command:?}: {error}; {}", hint()));
    if matches!(output.status.code(), Some(126 | 127)) && output.stdout.is_empty() {
        panic!("{command:?} could not be executed ({}); {}", output.status, hint());
    }
    output
}

/// Fields for a child test process, passed in one environment variable
/// (newline-separated: none of the fields the tests pass contains one).
pub fn encode_child_fields(fields: &[&str]) -> String {
    fields.join("\n")
}

/// The fields [`encode_child_fields`] put in `var`, if this process is such a child.
pub fn child_fields(var: &str) -> Option<Vec<String>> {
    Some(std::env::var(var).ok()?.split('\n').map(str::to_owned).collect())
}

/// A command that runs only the test `test_name` of this binary again, as a
/// child process, with `value` in the environment variable `env_var`: the
/// child finds it there and plays its part instead of the test's. Ignored
/// tests are included, so that a child of an ignored test runs too.
pub fn child_command(test_name: &str, env_var: &str, value: &str) -> Command {
    let mut command = this_test_binary();
    command
        .args([test_name, "--exact", "--nocapture", "--test-threads=1", "--include-ignored"])
        .env(env_var, value)
        .stdin(Stdio::null());
    command
}

/// Starts [`child_command`] with its stdout piped to the parent (stderr inherited).
pub fn spawn_child(test_name: &str, env_var: &str, value: &str) -> Child {
    child_command(test_name, env_var, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot spawn the child of {test_name}: {error}"))
}

/// What a child process of the crash tests does, and where; passed to it in
/// one environment variable.
pub struct ChildSpec {
    /// What the child does (in crash_recovery: which store it writes with).
    pub mode: String,
    pub redis_url: String,
    pub broker_uri: String,
    pub client_id: String,
    pub topic: String,
    /// The QoS the child publishes (or subscribes) with.
    pub qos: i32,
}

impl ChildSpec {
    /// The value of the environment variable that passes the spec to the child.
    pub fn to_env(&self) -> String {
        let qos = self.qos.to_string();
        encode_child_fields(&[
            &self.mode,
            &self.redis_url,
            &self.broker_uri,
            &self.client_id,
            &self.topic,
            &qos,
        ])
    }

    /// The spec in `var`, if this process is a child.
    pub fn from_env(var: &str) -> Option<Self> {
        let mut parts = child_fields(var)?.into_iter();
        Some(Self {
            mode: parts.next()?,
            redis_url: parts.next()?,
            broker_uri: parts.next()?,
            client_id: parts.next()?,
            topic: parts.next()?,
            qos: parts.next()?.parse().ok()?,
        })
    }
}

/// A lease value as the store writes it (`{hash}:owner`), naming `pid` on
/// the host with boot id `boot` (this host's when `None`), in this pid
/// namespace, with no start time: for tests that plant another owner's lease.
pub fn lease_value(pid: u32, boot: Option<&str>) -> String {
    let read =
        |path: &str| std::fs::read_to_string(path).map(|text| text.trim().to_owned()).unwrap_or_default();
    let boot = boot.map_or_else(|| read("/proc/sys/kernel/random/boot_id"), str::to_owned);
    let pid_ns = std::fs::read_link("/proc/self/ns/pid").map(|t| t.display().to_string()).unwrap_or_default();
    format!("host=planted-host pid={pid} since=1700000000 boot={boot} pidns={pid_ns} start= token=planted")
}

/// A pid that no process has now (the highest pid Linux may give is 4194304).
pub fn unused_pid() -> u32 {
    (4_000_000..4_194_304)
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .expect("a free pid")
}
