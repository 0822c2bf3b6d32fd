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
        // max_inflight_messages 0 (no limit): mosquitto 2.0.11 applies this limit
        // (default 20) to a client's incoming QoS 1/2 PUBLISHes too, a QoS 2 one
        // holding its slot until PUBREL, and drops a PUBLISH beyond it, answering
        // with reason code 151 "quota exceeded", which an MQTT 3.1.1 PUBACK or
        // PUBREC cannot carry: the publisher sees a plain ack. Paho's window
        // (`max_inflight`) defaults to 65535, kill9_publisher.rs uses 32. Measured
        // with tests/concurrency.rs at the default: 242 to 360 of 400 messages
        // arrived (QoS 2 only: 141 to 225), one rc151 ack in the broker's log per
        // missing message; none missing with QoS 1 only, or with the publisher's
        // max_inflight at 20 or 10.
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
