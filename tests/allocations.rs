//! Heap allocations of `put` in steady state, counted by a global allocator.
//!
//! Paho calls `put` for every message, twice; allocating there would be a cost
//! per message on small devices. The store encodes the HSET into one reused
//! buffer and keeps command records in recycled buffers, so a steady-state
//! `put` makes no allocation of its own. Reading Redis's reply does allocate:
//! redis-rs's parser (through `combine`) boxes an error each time it starts
//! on a reply before reading it from the socket, once per round trip, so a
//! `put` allocates exactly once, in redis-rs. Both are checked exactly: each
//! allocation is told apart by its call stack.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::RedisServer;

/// Counts allocations made by the current thread while counting is on.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Allocations made inside redis-rs reading a reply (`recv_response`, its parser).
    static IN_REPLY_PARSER: Cell<u64> = const { Cell::new(0) };
    /// Every other allocation.
    static ELSEWHERE: Cell<u64> = const { Cell::new(0) };
    /// The call stack of the first allocation counted in `ELSEWHERE`.
    static FIRST_ELSEWHERE: RefCell<Option<String>> = const { RefCell::new(None) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// thread-local cells are const-initialised, so touching them never allocates
// (capturing a call stack in `count` does, re-entering with counting off).
#[allow(unsafe_code, reason = "a global allocator cannot be written without it")]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Counts one allocation by where it was made. Capturing the call stack
/// allocates itself, so counting is off meanwhile.
fn count() {
    let _ = COUNTING.try_with(|counting| {
        if !counting.get() {
            return;
        }
        counting.set(false);
        let stack = Backtrace::force_capture().to_string();
        if stack.contains("redis::parser::") || stack.contains("Connection::recv_response") {
            IN_REPLY_PARSER.with(|n| n.set(n.get() + 1));
        } else {
            ELSEWHERE.with(|n| n.set(n.get() + 1));
            FIRST_ELSEWHERE.with(|first| {
                first.borrow_mut().get_or_insert(stack);
            });
        }
        counting.set(true);
    });
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations counted while `f` ran on this thread.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Allocations {
    in_reply_parser: u64,
    elsewhere: u64,
}

impl std::ops::AddAssign for Allocations {
    fn add_assign(&mut self, other: Self) {
        self.in_reply_parser += other.in_reply_parser;
        self.elsewhere += other.elsewhere;
    }
}

/// Runs `f` and returns the allocations it made on this thread.
fn allocations_in(f: impl FnOnce()) -> Allocations {
    IN_REPLY_PARSER.with(|n| n.set(0));
    ELSEWHERE.with(|n| n.set(0));
    COUNTING.with(|counting| counting.set(true));
    f();
    COUNTING.with(|counting| counting.set(false));
    Allocations { in_reply_parser: IN_REPLY_PARSER.with(Cell::get), elsewhere: ELSEWHERE.with(Cell::get) }
}

/// The calls Paho makes for one online QoS 1 message; returns the
/// allocations made inside its two `put`s.
fn one_message(store: &mut RedisPersistence, seqno: u32, msgid: u16, payload: &[u8]) -> Allocations {
    let command_key = format!("c-{seqno}");
    let header = [0x32u8, 0x80, 0x02];
    let buffers = vec![&header[..], payload];
    let mut in_puts = allocations_in(|| store.put(&command_key, buffers).expect("put command"));
    let read_back = store.get(&command_key).expect("read back");
    assert_eq!(read_back.len(), header.len() + payload.len());
    store.remove(&command_key).expect("remove command");
    let publish_key = format!("s-{msgid}");
    let buffers = vec![&header[..], payload];
    in_puts += allocations_in(|| store.put(&publish_key, buffers).expect("put publish"));
    for prefix in ["s5-", "sc5-", "s-", "sc-"] {
        store.remove(&format!("{prefix}{msgid}")).expect("remove");
    }
    in_puts
}

/// 1,000 messages after 100 of warm-up (buffers reach their working size,
/// the connection is open): the allocations inside their puts, and how many
/// puts that was.
fn steady_state_puts(store: &mut RedisPersistence) -> (Allocations, u64) {
    let payload = vec![0xA5u8; 256];
    for n in 0..100u16 {
        one_message(store, u32::from(n) + 1, n % 10 + 1, &payload);
    }
    let messages = 1000u16;
    let mut in_puts = Allocations::default();
    for n in 0..messages {
        in_puts += one_message(store, u32::from(n) + 101, n % 10 + 1, &payload);
    }
    (in_puts, 2 * u64::from(messages))
}

#[test]
fn a_steady_state_put_allocates_only_in_redis_rs_reply_parser_once() {
    let redis = RedisServer::start();
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid url");
    store.open("alloc", "broker:1883").expect("open");
    let (in_puts, puts) = steady_state_puts(&mut store);
    let first_elsewhere = FIRST_ELSEWHERE.with(|first| first.borrow_mut().take()).unwrap_or_default();
    assert_eq!(
        in_puts.elsewhere, 0,
        "allocations of the store itself in {puts} puts; the first:\n{first_elsewhere}"
    );
    assert_eq!(in_puts.in_reply_parser, puts, "one allocation per put, in redis-rs's reply parser");
    assert_eq!(redis.connection().hlen::<_, u64>("alloc:broker:1883").ok(), Some(0), "every record went");
    println!("{in_puts:?} in {puts} steady-state puts");
}

/// Over the Unix socket no thread reads the replies: each call reads them
/// into one reused buffer and finds where each ends by itself; redis-rs reads
/// only error replies, so its parser makes no allocation in a steady-state
/// `put`. (Other allocations are not asserted here: records stay in the
/// core's record table until their replies are taken in, and replies taken in at
/// once beyond the four the confirmations hold inline make one.)
#[cfg(feature = "unix-socket")]
#[test]
fn a_steady_state_put_over_the_unix_socket_never_allocates_in_redis_rs_parser() {
    let redis = RedisServer::start();
    let mut store = RedisPersistence::with_url(&redis.unix_url()).expect("valid url");
    store.open("alloc-unix", "broker:1883").expect("open");
    let (in_puts, puts) = steady_state_puts(&mut store);
    assert_eq!(in_puts.in_reply_parser, 0, "in {puts} puts");
    store.close().expect("close");
    store.open("alloc-unix", "broker:1883").expect("open again");
    assert!(store.keys().expect("keys").is_empty(), "every record went");
    println!("{in_puts:?} in {puts} steady-state puts over the Unix socket");
}
