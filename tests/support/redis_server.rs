//! A throwaway redis-server: temp dir, free TCP port and a Unix socket, no disk writes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{free_port, require_binary, wait_until};

/// The commands a client may send when it connects, as `INFO commandstats`
/// names them (a subcommand as `command|subcommand`).
const CONNECTION_SETUP: [&str; 3] = ["hello", "client|setinfo", "client|setname"];

/// The server the tests run: `$PMR_REDIS_SERVER` when set (a path, such as
/// Valkey's `valkey-server`: scripts/test.sh runs the suite against both),
/// else `redis-server` from PATH.
pub fn server_binary() -> PathBuf {
    match std::env::var_os("PMR_REDIS_SERVER") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "PMR_REDIS_SERVER={} is not a file", path.display());
            path
        }
        _ => require_binary("redis-server"),
    }
}

/// A redis-server owned by one test; killed on drop.
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    extra_args: Vec<String>,
    /// Set for a server that speaks only TLS on its port.
    tls: Option<TlsFiles>,
    child: Option<Child>,
}

/// The PEM files of a TLS redis-server: its certificate and key, and the CA it trusts.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl RedisServer {
    /// Starts a RAM-only redis-server (`--save '' --appendonly no`).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts one with extra command-line options, such as `["--maxmemory", "1mb"]`.
    pub fn start_with(extra_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("pmr-redis-").tempdir().expect("create a temp dir");
        let mut server = Self {
            dir,
            port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            tls: None,
            child: None,
        };
        server.spawn();
        server
    }

    /// Starts one that speaks only TLS on its port (`--port 0 --tls-port`), clients unauthenticated.
    pub fn start_tls(files: TlsFiles) -> Self {
        let dir = tempfile::Builder::new().prefix("pmr-redis-tls-").tempdir().expect("create a temp dir");
        let mut server =
            Self { dir, port: free_port(), extra_args: Vec::new(), tls: Some(files), child: None };
        server.spawn();
        server
    }

    /// `rediss://127.0.0.1:{port}/0`.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    /// `redis://127.0.0.1:{port}/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis+unix://{socket}`.
    pub fn unix_url(&self) -> String {
        format!("redis+unix://{}", self.socket_path().display())
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Unix socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// A plain redis-rs connection, for tests to look at or tamper with the data.
    /// The fields of `hash`, sorted.
    pub fn fields(&self, hash: &str) -> Vec<String> {
        let mut fields: Vec<String> =
            redis::cmd("HKEYS").arg(hash).query(&mut self.connection()).expect("HKEYS");
        fields.sort();
        fields
    }

    /// Fills Redis with keys of its own until it refuses a write at
    /// `maxmemory`; returns their names, to free the memory again.
    pub fn fill_to_maxmemory(&self) -> Vec<String> {
        let mut admin = self.connection();
        // Small values: the connection's buffers, freed when it closes, must
        // not take Redis back below the limit.
        let filler = vec![7u8; 1024];
        let mut names = Vec::new();
        loop {
            let name = format!("filler:{}", names.len());
            let set: redis::RedisResult<()> = redis::cmd("SET").arg(&name).arg(&filler).query(&mut admin);
            match set {
                Ok(()) => names.push(name),
                Err(error) if error.code() == Some("OOM") => return names,
                Err(error) => panic!("SET {name}: {error}"),
            }
            assert!(names.len() < 10_000, "Redis never reached maxmemory");
        }
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to the test redis-server")
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    /// SIGKILL: the server dies without a word to its clients, losing its data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and socket (empty: it keeps nothing on disk).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let binary = server_binary();
        let log = self.dir.path().join("redis.log");
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            &self.socket_path().display().to_string(),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &self.dir.path().display().to_string(),
            "--logfile",
            &log.display().to_string(),
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(tls) = &self.tls {
            let port_at = args.iter().position(|a| a == "--port").expect("--port") + 1;
            args[port_at] = "0".to_owned();
            for (option, value) in [
                ("--tls-port", self.port.to_string()),
                ("--tls-cert-file", tls.cert.display().to_string()),
                ("--tls-key-file", tls.key.display().to_string()),
                ("--tls-ca-cert-file", tls.ca.display().to_string()),
                ("--tls-auth-clients", "no".to_owned()),
            ] {
                args.push(option.to_owned());
                args.push(value);
            }
        }
        args.extend(self.extra_args.iter().cloned());
        let child = Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        self.child = Some(child);
        let url = self.url();
        let port = self.port;
        let tls = self.tls.is_some();
        let pid = self.pid();
        let ready = wait_until(Duration::from_secs(10), || {
            if tls {
                // Plain redis-rs cannot speak TLS here; a listening port is enough.
                let addr = ([127, 0, 0, 1], port).into();
                return std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            }
            // PING fails while Redis still loads its data; INFO tells that the
            // server answering is ours, not another one on the same port.
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| {
                    redis::cmd("PING").query::<String>(&mut c)?;
                    redis::cmd("INFO").arg("server").query::<String>(&mut c)
                })
                .is_ok_and(|info| info.lines().any(|line| line == format!("process_id:{pid}")))
        });
        if !ready {
            let log = fs::read_to_string(&log).unwrap_or_default();
            self.kill();
            panic!("redis-server on port {} did not start within 10 s; its log:\n{log}", self.port);
        }
    }

    /// The server's own log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// The temp dir the server runs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Requires `password` of every client (`CONFIG SET requirepass`).
    #[allow(dead_code)] // not every test binary needs a password
    pub fn require_password(&self, password: &str) {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg(password)
            .query(&mut self.connection())
            .expect("CONFIG SET requirepass");
    }

    /// Adds the ACL user `name` with `password` and `rules` (`ACL SETUSER name on >password rules…`).
    #[allow(dead_code)] // not every test binary needs a user
    pub fn add_user(&self, name: &str, password: &str, rules: &[&str]) {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg(name).arg("on").arg(format!(">{password}"));
        for rule in rules {
            cmd.arg(*rule);
        }
        let () = cmd.query(&mut self.connection()).expect("ACL SETUSER");
    }

    /// Zeroes the server's command statistics (`CONFIG RESETSTAT`).
    #[allow(dead_code)] // not every test binary counts commands
    pub fn reset_command_counts(&self) {
        let () =
            redis::cmd("CONFIG").arg("RESETSTAT").query(&mut self.connection()).expect("CONFIG RESETSTAT");
    }

    /// How many times each command ran since the last reset, from `INFO
    /// commandstats`, without the `INFO`/`CONFIG` this harness sends itself
    /// and without what a client sends when it connects, which depends on
    /// the server's version and not on the store: redis-rs sends `CLIENT
    /// SETINFO` at each connect (the store turns it off, the harness's own
    /// connections do not), which Redis 7.2 and later and Valkey count;
    /// `HELLO` is RESP3's handshake.
    #[allow(dead_code)]
    pub fn command_counts(&self) -> std::collections::BTreeMap<String, u64> {
        let info: String =
            redis::cmd("INFO").arg("commandstats").query(&mut self.connection()).expect("INFO commandstats");
        info.lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats.split(',').find_map(|stat| stat.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .filter(|(name, _)| name != "info" && !name.starts_with("config"))
            .filter(|(name, _)| !CONNECTION_SETUP.contains(&name.as_str()))
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` (such as `-STOP`) to `pid` with kill(1); the tests forbid unsafe code, so no libc.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|e| panic!("run kill {signal} {pid}: {e}"));
    assert!(status.success(), "kill {signal} {pid} failed: {status}");
}

/// A redis-server frozen with SIGSTOP; SIGCONT on drop, so a failing test never leaves it hung.
pub struct Frozen {
    pid: u32,
    thawed: bool,
}

impl Frozen {
    /// SIGCONT now.
    pub fn thaw(mut self) {
        self.resume();
    }

    fn resume(&mut self) {
        if !self.thawed {
            self.thawed = true;
            send_signal(self.pid, "-CONT");
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.thawed {
            self.thawed = true;
            // No assert here: a panic inside a drop during unwinding would abort.
            let _ = Command::new("kill").arg("-CONT").arg(self.pid.to_string()).status();
        }
    }
}

impl RedisServer {
    /// Freezes the server with SIGSTOP: it keeps its sockets and its data, and answers nothing.
    pub fn freeze(&self) -> Frozen {
        send_signal(self.pid(), "-STOP");
        Frozen { pid: self.pid(), thawed: false }
    }
}
