//! A logger that keeps every line, for tests that check what the crate logs.
//! (A test binary has one logger: use this or `init_logging`, not both.)
//!
//! Tests of one binary run in parallel and share this logger, so a test that
//! looks for its own line uses [`lines_here`] or [`logged_here`]: the store
//! logs on the thread that called it, and libtest runs each test on a thread
//! of its own, so another test's line with the same words cannot satisfy it.

use std::sync::Mutex;
use std::thread::{self, ThreadId};

/// One logged line and the thread that logged it.
struct Line {
    thread: ThreadId,
    text: String,
}

struct Capture(Mutex<Vec<Line>>);

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line =
            Line { thread: thread::current().id(), text: format!("{} {}", record.level(), record.args()) };
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

/// Every line logged so far by any thread, as `LEVEL message`.
pub fn lines() -> Vec<String> {
    CAPTURE.0.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|line| line.text.clone()).collect()
}

/// The lines logged so far by the current thread (the running test's calls), as `LEVEL message`.
pub fn lines_here() -> Vec<String> {
    let here = thread::current().id();
    let captured = CAPTURE.0.lock().unwrap_or_else(|e| e.into_inner());
    captured.iter().filter(|line| line.thread == here).map(|line| line.text.clone()).collect()
}

/// Whether some thread logged a line at `level` containing every one of `needles`.
pub fn logged(level: &str, needles: &[&str]) -> bool {
    matches(&lines(), level, needles)
}

/// Whether the current thread logged a line at `level` containing every one of `needles`.
pub fn logged_here(level: &str, needles: &[&str]) -> bool {
    matches(&lines_here(), level, needles)
}

fn matches(lines: &[String], level: &str, needles: &[&str]) -> bool {
    lines.iter().any(|line| line.starts_with(level) && needles.iter().all(|needle| line.contains(needle)))
}
