//! Heap allocations of `put` in steady state, counted by a global allocator.
//!
//! Paho calls `put` for every message, twice; allocating there would be a cost
//! per message on small devices. The store encodes the HSET into one reused
//! buffer and keeps command records in recycled buffers, so a steady-state
//! `put` may allocate at most once (the budget the project set; the count
//! here is exact, not a timing).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::RedisServer;

/// Counts allocations made by the current thread while counting is on.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// thread-local cells are const-initialised, so touching them never allocates.
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

fn count() {
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|counting| counting.set(true));
    f();
    COUNTING.with(|counting| counting.set(false));
    ALLOCATIONS.with(Cell::get)
}

/// The calls Paho makes for one online QoS 1 message; returns the
/// allocations made inside its two `put`s.
fn one_message(store: &mut RedisPersistence, seqno: u32, msgid: u16, payload: &[u8]) -> u64 {
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

#[test]
fn a_steady_state_put_allocates_at_most_once() {
    let redis = RedisServer::start();
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid url");
    store.open("alloc", "broker:1883").expect("open");
    let payload = vec![0xA5u8; 256];

    // Warm up: buffers reach their working size, the connection is open.
    for n in 0..100u16 {
        one_message(&mut store, u32::from(n) + 1, n % 10 + 1, &payload);
    }
    let messages = 1000u16;
    let mut in_puts = 0;
    for n in 0..messages {
        in_puts += one_message(&mut store, u32::from(n) + 101, n % 10 + 1, &payload);
    }
    let puts = 2 * u64::from(messages);
    assert!(in_puts <= puts, "{in_puts} allocations in {puts} puts");
    assert_eq!(redis.connection().hlen::<_, u64>("alloc:broker:1883").ok(), Some(0), "every record went");
    println!("{in_puts} allocations in {puts} steady-state puts");
}
