//! A throwaway mosquitto broker on a free port of 127.0.0.1.

use std::fs;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{free_port, require_binary, wait_until};

/// A mosquitto broker owned by one test; killed on drop. Sessions live in its
/// memory only, so they survive client restarts but not a broker restart.
pub struct Mosquitto {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts a broker on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a broker on `port`, for a test that reserved the port before the broker existed.
    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::Builder::new().prefix("pmr-mosquitto-").tempdir().expect("create a temp dir");
        let mut broker = Self { dir, port, child: None };
        broker.spawn();
        broker
    }

    /// `tcp://127.0.0.1:{port}`.
    pub fn uri(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn(&mut self) {
        let binary = require_binary("mosquitto");
        let config = self.dir.path().join("mosquitto.conf");
        let log = self.dir.path().join("mosquitto.log");
        // max_inflight_messages 0: with mosquitto's default of 20, bursts of QoS 2
        // messages (4 threads x 100 in tests/concurrency.rs) were seen to reach
        // the subscriber incompletely, with the in-memory model store as well.
        fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 100000\nmax_inflight_messages 0\nlog_dest stdout\nlog_type error\nlog_type warning\n",
                port = self.port
            ),
        )
        .expect("write mosquitto.conf");
        let log_file = fs::File::create(&log).expect("create mosquitto.log");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        self.child = Some(child);
        let port = self.port;
        let ready = wait_until(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
        });
        if !ready {
            let log = fs::read_to_string(&log).unwrap_or_default();
            self.kill();
            panic!("mosquitto on port {port} did not start within 10 s; its log:\n{log}");
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
