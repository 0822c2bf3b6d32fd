//! A logger that keeps every line, for tests that check what the crate logs.
//! (A test binary has one logger: use this or `init_logging`, not both.)

use std::sync::Mutex;

struct Capture(Mutex<Vec<String>>);

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = format!("{} {}", record.level(), record.args());
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
    fn flush(&self) {}
}

/// Installs the capturing logger (once per test binary; later calls do nothing).
pub fn install() {
    if log::set_logger(&CAPTURE).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

/// Every line logged so far, as `LEVEL message`.
pub fn lines() -> Vec<String> {
    CAPTURE.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether a line at `level` contains every one of `needles`.
pub fn logged(level: &str, needles: &[&str]) -> bool {
    lines().iter().any(|line| line.starts_with(level) && needles.iter().all(|needle| line.contains(needle)))
}
