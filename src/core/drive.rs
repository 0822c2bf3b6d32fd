//! One Paho call, start to end: the core's plan runs, the core takes the
//! outcome, then the follow-ups the core wants run while Redis has not made
//! this call wait already. Shared by the store and by the core's simulated
//! tests, so that both run the very same sequence.

use redis::RedisError;
use smallvec::SmallVec;

use super::{Answer, Core, Exchange, Plan};
use crate::Error;

/// Redis's replies to plans sent unanswered, oldest first.
pub(crate) type Confirmations = SmallVec<[Result<(), RedisError>; 4]>;

/// What runs plans: the transport on a real Redis, or a simulated one.
pub(crate) trait Runner {
    /// Runs `plan` (never empty) and says what became of it.
    fn run(&mut self, plan: &Plan<'_>) -> Exchange;
    /// The replies that came in for plans sent unanswered (`Exchange::sent`).
    fn replies(&mut self) -> Confirmations {
        Confirmations::new()
    }
    /// Waits, at most once, for the replies still due.
    fn settle(&mut self) {}
    /// How many connections have been opened so far.
    fn generation(&self) -> u64;
    /// Whether this call may still wait for Redis: after one timeout or
    /// failed connect, a call does not wait again (a hung Redis costs one wait).
    fn may_wait(&self) -> bool;
}

/// Where a `get` found its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// The hash as `open` read it.
    Snapshot,
    /// The core's record cache.
    Cache,
    /// A read from Redis.
    Redis,
}

/// Runs `plan`, unless it is empty. Taking the plan by value ends its borrow
/// of the core, which then takes the exchange.
fn send(runner: &mut impl Runner, plan: Plan<'_>) -> Option<Exchange> {
    (!plan.is_empty()).then(|| runner.run(&plan))
}

/// Gives the core the replies that came in. Never between running a plan
/// and completing it: a reply to that plan could arrive before the core
/// knows it was sent.
fn absorb(core: &mut Core, runner: &mut impl Runner) {
    for reply in runner.replies() {
        let _ = core.confirm(reply);
    }
}

fn finish(core: &mut Core, runner: &mut impl Runner, exchange: Option<Exchange>) -> Result<Answer, Error> {
    let result = exchange.map_or(Ok(Answer::Done), |exchange| core.complete(exchange));
    absorb(core, runner);
    follow_ups(core, runner);
    result
}

/// Runs what the core wants after a call; failures are the core's to log and retry.
pub(crate) fn follow_ups(core: &mut Core, runner: &mut impl Runner) {
    // Each follow-up settles what made it due; a few suffice (a check of the
    // hash, then what it found owed).
    for _ in 0..4 {
        if !runner.may_wait() {
            return;
        }
        let generation = runner.generation();
        let Some(plan) = core.follow_up(generation) else { return };
        if let Some(exchange) = send(runner, plan) {
            let _ = core.complete(exchange);
            absorb(core, runner);
        }
    }
}

/// `open` of a new core: reads the hash.
pub(crate) fn open(core: &mut Core, runner: &mut impl Runner) -> Result<(), Error> {
    let exchange = runner.run(&core.open());
    // Replies to a store closed before: it is gone.
    let _ = runner.replies();
    match core.complete(exchange) {
        Err(Error::NotAHash { .. }) => {
            let exchange = runner.run(&core.key_type());
            core.complete(exchange).map(drop)
        }
        Err(error) => Err(error),
        Ok(_) => {
            follow_ups(core, runner);
            Ok(())
        }
    }
}

pub(crate) fn put(
    core: &mut Core,
    runner: &mut impl Runner,
    key: &str,
    parts: &[&[u8]],
) -> Result<(), Error> {
    absorb(core, runner);
    let exchange = send(runner, core.put(key, parts));
    finish(core, runner, exchange).map(drop)
}

pub(crate) fn get(core: &mut Core, runner: &mut impl Runner, key: &str) -> Result<(Vec<u8>, Served), Error> {
    absorb(core, runner);
    let served = core.in_memory(key);
    let step = match core.get(key) {
        Ok(Ok(value)) => Ok(Ok(value)),
        Ok(Err(plan)) => Ok(Err(send(runner, plan))),
        Err(error) => Err(error),
    };
    let result = match step {
        Ok(Ok(value)) => Ok((value, served.unwrap_or(Served::Cache))),
        Ok(Err(exchange)) => match exchange.map(|exchange| core.complete(exchange)) {
            Some(Ok(Answer::Value(value))) => Ok((value, Served::Redis)),
            Some(Err(error)) => Err(error),
            Some(Ok(Answer::Done)) | None => Err(Error::KeyNotFound { key: key.to_owned() }),
        },
        Err(error) => Err(error),
    };
    follow_ups(core, runner);
    result
}

pub(crate) fn remove(core: &mut Core, runner: &mut impl Runner, key: &str) -> Result<(), Error> {
    absorb(core, runner);
    let exchange = send(runner, core.remove(key));
    finish(core, runner, exchange).map(drop)
}

pub(crate) fn keys(core: &mut Core, runner: &mut impl Runner) -> Vec<String> {
    absorb(core, runner);
    // A check the core wants (a write may have run late) comes first: its
    // outcome may change the keys.
    follow_ups(core, runner);
    core.keys()
}

pub(crate) fn clear(core: &mut Core, runner: &mut impl Runner) -> Result<(), Error> {
    absorb(core, runner);
    let exchange = send(runner, core.clear());
    finish(core, runner, exchange).map(drop)
}

/// `close`: sends what is still owed, and says what is lost if Redis cannot take it.
pub(crate) fn close(core: &mut Core, runner: &mut impl Runner) {
    absorb(core, runner);
    if let Some(exchange) = send(runner, core.close()) {
        let _ = core.complete(exchange);
    }
    // A refusal still to come would leave records only here: wait for them.
    runner.settle();
    absorb(core, runner);
    if core.owes() {
        log::error!(
            "redis persistence: closing `{}` with {} records Redis never took, and removals it never ran",
            core.hash(),
            core.unwritten()
        );
    }
}
