//! One Paho call, start to end: the core polled for plans, each run and its
//! outcome taken back, first the call's own, then upkeep while Redis has not
//! made this call wait already. Shared by the store and by the core's
//! simulated tests, so that both run the very same sequence.

use redis::RedisError;
use smallvec::SmallVec;

use super::{Answer, Core, Exchange, Failure, Plan};
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
    /// A value the core kept in memory.
    Cache,
    /// A read from Redis.
    Redis,
}

/// Most upkeep plans after a call: each settles what made it due (a check
/// of the hash, then what it found owed).
const UPKEEP_ROUNDS: usize = 4;

/// Gives the core the replies that came in. Never between running a plan
/// and completing it: a reply to that plan could arrive before the core
/// knows it was sent.
fn absorb(core: &mut Core, runner: &mut impl Runner) {
    for reply in runner.replies() {
        let _ = core.confirm(reply);
    }
}

/// Runs the next plan, if the core has one. The plan's borrow of the core
/// ends here, so that the core can take the exchange.
/// A fenced store's write or removal fails here, unsent, as if Redis were
/// unreachable: the one place every plan passes, for the store and its
/// simulated tests alike.
fn run_next(core: &mut Core, runner: &mut impl Runner, upkeep: bool) -> Option<Exchange> {
    let fence = core.fenced().map(str::to_owned);
    let generation = runner.generation();
    let plan = core.poll(generation, upkeep)?;
    if let Some(reason) = fence.filter(|_| plan.changes_hash()) {
        let error = Error::Fenced { hash: plan.hash.to_owned(), reason };
        let failure = Some(Failure { error, may_run_late: false });
        return Some(Exchange {
            replies: SmallVec::new(),
            failure,
            generation,
            sent: false,
            command: "none",
        });
    }
    Some(runner.run(&plan))
}

/// Runs the current call's plans until the core answers it.
fn answer(core: &mut Core, runner: &mut impl Runner) -> Result<Answer, Error> {
    while let Some(exchange) = run_next(core, runner, false) {
        let completed = core.complete(exchange);
        absorb(core, runner);
        if let Some(answer) = completed {
            return answer;
        }
    }
    Ok(Answer::Done)
}

/// Runs what the core wants besides, while Redis has not made this call
/// wait; failures are the core's to log and retry.
fn upkeep(core: &mut Core, runner: &mut impl Runner) {
    for _ in 0..UPKEEP_ROUNDS {
        if !runner.may_wait() {
            return;
        }
        let Some(exchange) = run_next(core, runner, true) else { return };
        let _ = core.complete(exchange);
        absorb(core, runner);
    }
}

/// The rest of a call, once the core has taken it in.
fn finish(core: &mut Core, runner: &mut impl Runner) -> Result<(), Error> {
    let answer = answer(core, runner);
    upkeep(core, runner);
    answer.map(drop)
}

/// `open` of a new core: reads the hash.
pub(crate) fn open(core: &mut Core, runner: &mut impl Runner) -> Result<(), Error> {
    core.open();
    answer(core, runner)?;
    upkeep(core, runner);
    Ok(())
}

pub(crate) fn put(
    core: &mut Core,
    runner: &mut impl Runner,
    key: &str,
    parts: &[&[u8]],
) -> Result<(), Error> {
    absorb(core, runner);
    core.put(key, parts);
    finish(core, runner)
}

pub(crate) fn get(core: &mut Core, runner: &mut impl Runner, key: &str) -> Result<(Vec<u8>, Served), Error> {
    absorb(core, runner);
    let result = match core.get(key) {
        Ok(Some(found)) => Ok(found),
        Ok(None) => match answer(core, runner) {
            Ok(Answer::Value(value)) => Ok((value, Served::Redis)),
            Ok(Answer::Done) => Err(Error::KeyNotFound { key: key.to_owned() }),
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    };
    upkeep(core, runner);
    result
}

pub(crate) fn remove(core: &mut Core, runner: &mut impl Runner, key: &str) -> Result<(), Error> {
    absorb(core, runner);
    core.remove(key);
    finish(core, runner)
}

pub(crate) fn keys(core: &mut Core, runner: &mut impl Runner) -> Vec<String> {
    absorb(core, runner);
    // A check the core wants (a write may have run late) comes first: its
    // outcome may change the keys.
    upkeep(core, runner);
    core.keys()
}

pub(crate) fn clear(core: &mut Core, runner: &mut impl Runner) -> Result<(), Error> {
    absorb(core, runner);
    core.clear();
    finish(core, runner)
}

/// `close`: sends what is still owed, and says what is lost if Redis cannot take it.
pub(crate) fn close(core: &mut Core, runner: &mut impl Runner) {
    absorb(core, runner);
    core.close();
    let _ = answer(core, runner);
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
