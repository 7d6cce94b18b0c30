//! The generic cell rate algorithm (GCRA), the decision behind every rate limiter.
//!
//! Quantities, as the algorithm names them:
//!
//! * `t` — the emission interval: nanoseconds one token is worth (`1 / rate`);
//! * `tau` — the burst tolerance: `capacity · t`, how far ahead of now the
//!   theoretical arrival time may run;
//! * `tat` — the theoretical arrival time: when the bucket would be full again.
//!
//! A request for `n` tokens at time `now` is admitted when
//! `max(tat, now) + n·t ≤ now + tau`, and then `tat` becomes `max(tat, now) + n·t`.
//!
//! # Settling: admission without a clock read
//!
//! Reading a clock costs more than the rest of a decision, so the state keeps a
//! count `c` of tokens admitted since the last clock read ("unsettled"). While
//! `c + n` stays within the settle interval `k`, a request is decided against
//! the time of the last settle `s` instead of now: it is admitted when
//! `max(tat, s) + (c + n)·t ≤ s + tau`. Time only moves forward, so anything
//! admissible at `s` is admissible now. Unsettled tokens are charged at the next
//! settle, which is never earlier than their use; so the limiter never admits
//! more than the exact algorithm. After an idle gap it can admit up to `k`
//! tokens *fewer* (those charged late). `k = 0` gives the exact algorithm with
//! one clock read per decision.
//!
//! `tat` and `c` share one `AtomicU64` (58 + 6 bits), updated by compare-and-swap;
//! no lock is taken and nothing allocates.

// Under `--cfg agent_patterns_loom` the state machine runs on loom's atomics,
// so the loom models at the end of this file explore its interleavings.
#[cfg(agent_patterns_loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(agent_patterns_loom))]
use std::sync::atomic::{AtomicU64, Ordering};

/// Wait a moment for a frozen word (a parameter change in progress).
#[inline]
fn backoff() {
    #[cfg(agent_patterns_loom)]
    loom::thread::yield_now();
    #[cfg(not(agent_patterns_loom))]
    std::hint::spin_loop();
}

use crate::clock::Clock;

const C_BITS: u32 = 6;
const C_MASK: u64 = (1 << C_BITS) - 1;
/// `c` value that marks the word as being rewritten (rate or capacity change).
const FROZEN: u64 = C_MASK;
/// Largest settle interval that fits beside the frozen marker.
pub(crate) const MAX_SETTLE_INTERVAL: u64 = C_MASK - 1;
/// Largest representable `tat`: 2^58 ns, about 9.1 years after the limiter's creation.
pub(crate) const TAT_MAX: u64 = u64::MAX >> C_BITS;
/// Largest burst window accepted, leaving headroom for additions below `TAT_MAX`.
pub(crate) const TAU_MAX: u64 = TAT_MAX / 8;

#[inline]
fn pack(tat: u64, c: u64) -> u64 {
    (tat.min(TAT_MAX) << C_BITS) | c
}

#[inline]
fn unpack(word: u64) -> (u64, u64) {
    (word >> C_BITS, word & C_MASK)
}

/// The algorithm's parameters, shared by every key of a keyed limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    /// Nanoseconds per token.
    pub(crate) t: u64,
    /// Burst window in nanoseconds (`capacity · t`).
    pub(crate) tau: u64,
    /// Settle interval: tokens admitted between clock reads.
    pub(crate) k: u64,
}

impl Params {
    pub(crate) fn capacity(&self) -> u64 {
        self.tau.checked_div(self.t).unwrap_or(0)
    }
}

/// The parameters as the hot path reads them: three relaxed loads.
///
/// Writers change them only while a state's word is frozen; a reader loads
/// them after loading the word, so a stale pair is caught by the failing
/// compare-and-swap (the word changed when it was unfrozen).
#[derive(Debug, Default)]
pub(crate) struct ParamsCell {
    t: AtomicU64,
    tau: AtomicU64,
    k: AtomicU64,
}

impl ParamsCell {
    pub(crate) fn new(p: Params) -> Self {
        let cell = Self::default();
        cell.store(p);
        cell
    }

    #[inline]
    pub(crate) fn load(&self) -> Params {
        Params {
            t: self.t.load(Ordering::Acquire),
            tau: self.tau.load(Ordering::Acquire),
            k: self.k.load(Ordering::Acquire),
        }
    }

    pub(crate) fn store(&self, p: Params) {
        self.t.store(p.t, Ordering::Release);
        self.tau.store(p.tau, Ordering::Release);
        self.k.store(p.k, Ordering::Release);
    }
}

/// What a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Admitted. `settled` tokens were charged against the clock just now
    /// (0 when admitted without a clock read).
    Allowed { settled: u64 },
    /// Refused; the tokens will be available after `wait_ns`.
    Denied { wait_ns: u64 },
    /// More tokens than the capacity: never admissible.
    Impossible,
}

/// One step of a compare-and-swap loop over the state word.
enum Step<R> {
    /// Write `(tat, c)`; `now` is the clock reading it was settled at, if any.
    Write {
        tat: u64,
        c: u64,
        now: Option<u64>,
        result: R,
    },
    /// Leave the state as it is.
    Done(R),
}

/// One bucket's state.
#[derive(Debug, Default)]
pub(crate) struct State {
    word: AtomicU64,
    settled_at: AtomicU64,
}

impl State {
    /// Run `step` on a consistent `(tat, c, params)` until its write lands.
    #[inline]
    fn update<R>(&self, cell: &ParamsCell, mut step: impl FnMut(u64, u64, Params) -> Step<R>) -> R {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let (tat, c) = unpack(word);
            if c == FROZEN {
                backoff();
                word = self.word.load(Ordering::Acquire);
                continue;
            }
            match step(tat, c, cell.load()) {
                Step::Done(result) => return result,
                Step::Write {
                    tat,
                    c,
                    now,
                    result,
                } => {
                    match self.word.compare_exchange_weak(
                        word,
                        pack(tat, c),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            if let Some(now) = now {
                                self.settled_at.fetch_max(now, Ordering::AcqRel);
                            }
                            return result;
                        }
                        Err(current) => word = current,
                    }
                }
            }
        }
    }

    /// Decide a request for `n ≥ 1` tokens.
    #[inline]
    pub(crate) fn decide(&self, cell: &ParamsCell, clock: &dyn Clock, n: u64) -> Decision {
        // Read the clock at most once per decision: a retry after a lost
        // compare-and-swap reuses it, so contention does not multiply clock
        // reads. (The retry happens nanoseconds later; charging at the earlier
        // reading is off by that much time at most.)
        let mut clock_reading = None;
        self.update(cell, |tat, c, p| {
            let Some(need) = n.checked_mul(p.t).filter(|need| *need <= p.tau) else {
                return Step::Done(Decision::Impossible);
            };
            if c + n <= p.k {
                let s = self.settled_at.load(Ordering::Acquire);
                if tat.max(s).saturating_add((c + n) * p.t) <= s.saturating_add(p.tau) {
                    return Step::Write {
                        tat,
                        c: c + n,
                        now: None,
                        result: Decision::Allowed { settled: 0 },
                    };
                }
            }
            let now = *clock_reading.get_or_insert_with(|| clock.now_nanos());
            let new_tat = tat.max(now).saturating_add(c * p.t).saturating_add(need);
            let limit = now.saturating_add(p.tau);
            if new_tat > limit {
                return Step::Done(Decision::Denied {
                    wait_ns: new_tat - limit,
                });
            }
            Step::Write {
                tat: new_tat,
                c: 0,
                now: Some(now),
                result: Decision::Allowed { settled: c + n },
            }
        })
    }

    /// Book `n` tokens even when that runs into debt, unless the caller would
    /// have to wait longer than `max_wait_ns`. Returns the wait.
    pub(crate) fn book(
        &self,
        cell: &ParamsCell,
        clock: &dyn Clock,
        n: u64,
        max_wait_ns: u64,
    ) -> Result<u64, Decision> {
        self.update(cell, |tat, c, p| {
            let Some(need) = n.checked_mul(p.t).filter(|need| *need <= p.tau) else {
                return Step::Done(Err(Decision::Impossible));
            };
            let now = clock.now_nanos();
            let new_tat = tat.max(now).saturating_add(c * p.t).saturating_add(need);
            let wait = new_tat.saturating_sub(now.saturating_add(p.tau));
            if wait > max_wait_ns {
                return Step::Done(Err(Decision::Denied { wait_ns: wait }));
            }
            Step::Write {
                tat: new_tat,
                c: 0,
                now: Some(now),
                result: Ok(wait),
            }
        })
    }

    /// Give back `n` tokens (a cancelled booking, an over-estimated
    /// reservation). The bucket never rises above its capacity.
    pub(crate) fn refund(&self, cell: &ParamsCell, clock: &dyn Clock, n: u64) {
        self.update(cell, |tat, c, p| {
            let now = clock.now_nanos();
            let charged = tat.max(now).saturating_add(c * p.t);
            Step::Write {
                tat: charged.saturating_sub(n.saturating_mul(p.t)).max(now),
                c: 0,
                now: Some(now),
                result: (),
            }
        });
    }

    /// Charge `n` more tokens unconditionally (usage above a reservation).
    pub(crate) fn charge(&self, cell: &ParamsCell, clock: &dyn Clock, n: u64) {
        self.update(cell, |tat, c, p| {
            let now = clock.now_nanos();
            Step::Write {
                tat: tat
                    .max(now)
                    .saturating_add(c * p.t)
                    .saturating_add(n.saturating_mul(p.t)),
                c: 0,
                now: Some(now),
                result: (),
            }
        });
    }

    /// Whole tokens available now, and the nanoseconds until `n` are.
    pub(crate) fn peek(&self, cell: &ParamsCell, clock: &dyn Clock, n: u64) -> (u64, u64) {
        self.update(cell, |tat, c, p| {
            let now = clock.now_nanos();
            let charged = tat.max(now).saturating_add(c * p.t);
            let limit = now.saturating_add(p.tau);
            let available = limit.saturating_sub(charged).checked_div(p.t).unwrap_or(0);
            let wait = charged
                .saturating_add(n.saturating_mul(p.t))
                .saturating_sub(limit);
            Step::Done((available, wait))
        })
    }

    /// Whether the bucket is full and settled: forgetting it loses nothing.
    pub(crate) fn is_idle(&self, clock: &dyn Clock) -> bool {
        let (tat, c) = unpack(self.word.load(Ordering::Acquire));
        c == 0 && tat <= clock.now_nanos()
    }

    /// Switch to new parameters, keeping the debt in tokens: the word is frozen,
    /// `publish` stores the new parameters, then the converted word is written.
    pub(crate) fn convert(
        &self,
        old: Params,
        new: Params,
        clock: &dyn Clock,
        publish: impl FnOnce(),
    ) {
        let mut word = self.word.load(Ordering::Acquire);
        let (tat, c) = loop {
            let (tat, c) = unpack(word);
            if c == FROZEN {
                backoff();
                word = self.word.load(Ordering::Acquire);
                continue;
            }
            match self.word.compare_exchange_weak(
                word,
                pack(tat, FROZEN),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break (tat, c),
                Err(current) => word = current,
            }
        };
        publish();
        let now = clock.now_nanos();
        let debt_ns = tat.max(now).saturating_add(c * old.t) - now;
        let debt_tokens = debt_ns as f64 / old.t as f64;
        let new_tat = now.saturating_add((debt_tokens * new.t as f64) as u64);
        self.settled_at.fetch_max(now, Ordering::AcqRel);
        self.word.store(pack(new_tat, 0), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn params(capacity: u64, per_sec: u64, k: u64) -> ParamsCell {
        let t = 1_000_000_000 / per_sec;
        ParamsCell::new(Params {
            t,
            tau: capacity * t,
            k,
        })
    }

    #[test]
    fn admits_the_burst_then_refills_at_the_rate() {
        for k in [0, 8] {
            let clock = ManualClock::new();
            let s = State::default();
            let p = params(10, 10, k);
            for _ in 0..10 {
                assert!(
                    matches!(s.decide(&p, &clock, 1), Decision::Allowed { .. }),
                    "k={k}"
                );
            }
            assert_eq!(
                s.decide(&p, &clock, 1),
                Decision::Denied {
                    wait_ns: 100_000_000
                }
            );
            clock.advance(Duration::from_millis(100));
            assert!(matches!(s.decide(&p, &clock, 1), Decision::Allowed { .. }));
            assert!(matches!(s.decide(&p, &clock, 1), Decision::Denied { .. }));
        }
    }

    #[test]
    fn more_than_capacity_is_impossible() {
        let clock = ManualClock::new();
        let s = State::default();
        assert_eq!(s.decide(&params(5, 1, 0), &clock, 6), Decision::Impossible);
    }

    #[test]
    fn unsettled_tokens_are_never_charged_early() {
        // k = 4: after an idle gap the limiter may admit fewer, never more.
        let clock = ManualClock::new();
        let s = State::default();
        let p = params(10, 1, 4);
        assert_eq!(s.decide(&p, &clock, 1), Decision::Allowed { settled: 0 });
        clock.advance(Duration::from_secs(100));
        let mut admitted = 0;
        while let Decision::Allowed { .. } = s.decide(&p, &clock, 1) {
            admitted += 1;
        }
        assert!((9..=10).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn booking_runs_into_debt_in_fifo_order() {
        let clock = ManualClock::new();
        let s = State::default();
        let p = params(2, 1, 0);
        assert_eq!(s.book(&p, &clock, 2, 0), Ok(0));
        assert_eq!(s.book(&p, &clock, 1, 5_000_000_000), Ok(1_000_000_000));
        assert_eq!(s.book(&p, &clock, 1, 5_000_000_000), Ok(2_000_000_000));
        assert_eq!(
            s.book(&p, &clock, 1, 1_000_000_000),
            Err(Decision::Denied {
                wait_ns: 3_000_000_000
            })
        );
    }

    #[test]
    fn refund_never_exceeds_capacity() {
        let clock = ManualClock::new();
        let s = State::default();
        let p = params(3, 1, 0);
        s.refund(&p, &clock, 100);
        assert_eq!(s.peek(&p, &clock, 1).0, 3);
        assert!(matches!(s.decide(&p, &clock, 3), Decision::Allowed { .. }));
        s.refund(&p, &clock, 1);
        assert_eq!(s.peek(&p, &clock, 1).0, 1);
    }

    #[test]
    fn conversion_keeps_debt_in_tokens() {
        let clock = ManualClock::new();
        let s = State::default();
        let old = params(10, 10, 0);
        for _ in 0..10 {
            assert!(matches!(
                s.decide(&old, &clock, 1),
                Decision::Allowed { .. }
            ));
        }
        // 10 tokens of debt at 10/s = 1 s; at 1/s the same debt takes 10 s.
        let new = params(10, 1, 0);
        s.convert(old.load(), new.load(), &clock, || old.store(new.load()));
        assert_eq!(s.peek(&old, &clock, 1), (0, 1_000_000_000));
        clock.advance(Duration::from_secs(10));
        assert_eq!(s.peek(&old, &clock, 1).0, 10);
    }
}

/// Loom models of the state machine: every interleaving of a few threads
/// (bounded preemptions) keeps the limiter's promises. Run with
/// `RUSTFLAGS="--cfg agent_patterns_loom" cargo test -p agent-patterns-resilience
/// --lib --release loom_models` (`cargo xtask test` does).
#[cfg(all(test, agent_patterns_loom))]
mod loom_models {
    use super::*;
    use crate::clock::ManualClock;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;

    /// Explore every interleaving with up to three preemptions.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.max_branches = 100_000;
        builder.preemption_bound = Some(3);
        builder.check(f);
    }

    /// A bucket of `capacity` tokens refilled at one per second.
    fn params(capacity: u64, k: u64) -> Params {
        let t = 1_000_000_000;
        Params {
            t,
            tau: capacity * t,
            k,
        }
    }

    /// A thread that asks for one token and counts it in `admitted` if granted.
    fn decider(
        cell: &Arc<ParamsCell>,
        state: &Arc<State>,
        admitted: &Arc<AtomicUsize>,
    ) -> loom::thread::JoinHandle<()> {
        let (cell, state, admitted) = (Arc::clone(cell), Arc::clone(state), Arc::clone(admitted));
        loom::thread::spawn(move || {
            let clock = ManualClock::new();
            if matches!(state.decide(&cell, &clock, 1), Decision::Allowed { .. }) {
                admitted.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    /// `threads` threads each ask for one token at one instant: exactly
    /// `capacity` of them get one, whichever way they interleave.
    fn admits_exactly_capacity(capacity: u64, threads: usize, k: u64) {
        model(move || {
            let cell = Arc::new(ParamsCell::new(params(capacity, k)));
            let state = Arc::new(State::default());
            let admitted = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..threads)
                .map(|_| decider(&cell, &state, &admitted))
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            let admitted = admitted.load(Ordering::Relaxed) as u64;
            assert_eq!(admitted, capacity.min(threads as u64));
        });
    }

    #[test]
    fn one_token_two_threads_one_winner() {
        admits_exactly_capacity(1, 2, 0);
    }

    #[test]
    fn settled_fast_path_never_over_admits() {
        // k = 2: admissions between clock reads go through the settled path.
        admits_exactly_capacity(2, 3, 2);
    }

    #[test]
    fn a_rate_change_during_decisions_neither_loses_nor_invents_tokens() {
        model(|| {
            let cell = Arc::new(ParamsCell::new(params(2, 0)));
            let state = Arc::new(State::default());
            let admitted = Arc::new(AtomicUsize::new(0));
            let deciders = [decider(&cell, &state, &admitted)];
            // Same capacity, other settle interval: the two tokens stay two.
            let old = params(2, 0);
            let new = params(2, 1);
            let clock = ManualClock::new();
            state.convert(old, new, &clock, || cell.store(new));
            for h in deciders {
                h.join().unwrap();
            }
            assert_eq!(admitted.load(Ordering::Relaxed), 1);
            // One token is left at this instant, and only one.
            assert!(matches!(
                state.decide(&cell, &clock, 1),
                Decision::Allowed { .. }
            ));
            assert!(matches!(
                state.decide(&cell, &clock, 1),
                Decision::Denied { .. }
            ));
        });
    }
}
