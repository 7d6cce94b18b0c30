#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Rate limiter behaviour on virtual time, including the admission bound.

use std::sync::Arc;
use std::time::Duration;

use agent_patterns_core::AgentError;
use agent_patterns_resilience::*;
use proptest::prelude::*;

fn manual(capacity: u64, rate: f64, settle: Option<u64>) -> (RateLimiter, ManualClock) {
    let clock = ManualClock::new();
    let mut b = RateLimiter::builder(
        "t",
        RateLimiterConfig {
            capacity,
            refill_rate: rate,
        },
    )
    .clock(Arc::new(clock.clone()));
    if let Some(k) = settle {
        b = b.settle_interval(k);
    }
    (b.build().unwrap(), clock)
}

#[tokio::test(start_paused = true)]
async fn guide_usage_maps_to_429() {
    let limiter = RateLimiter::new(
        "api".to_string(),
        RateLimiterConfig {
            capacity: 1,
            refill_rate: 10.0,
        },
    );
    async fn handle(l: &RateLimiter) -> Result<&'static str, AgentError> {
        match l.try_acquire(1).await {
            Ok(()) => Ok("handled"),
            Err(RateLimiterError::RateLimitExceeded) => Err(AgentError::RateLimited),
        }
    }
    assert_eq!(handle(&limiter).await, Ok("handled"));
    let err = handle(&limiter).await.unwrap_err();
    assert_eq!(err.status_code().as_u16(), 429);
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(handle(&limiter).await, Ok("handled"));
}

#[tokio::test(start_paused = true)]
async fn question_mark_converts_to_agent_error() {
    async fn call(l: &RateLimiter) -> Result<(), AgentError> {
        l.try_acquire(1).await?;
        Ok(())
    }
    let l = RateLimiter::new(
        "q",
        RateLimiterConfig {
            capacity: 1,
            refill_rate: 1.0,
        },
    );
    assert!(call(&l).await.is_ok());
    assert_eq!(call(&l).await, Err(AgentError::RateLimited));
}

#[test]
fn invalid_configs_are_rejected_with_the_field_name() {
    for (config, field) in [
        (
            RateLimiterConfig {
                capacity: 0,
                refill_rate: 1.0,
            },
            "capacity",
        ),
        (
            RateLimiterConfig {
                capacity: 1,
                refill_rate: 0.0,
            },
            "refill_rate",
        ),
        (
            RateLimiterConfig {
                capacity: 1,
                refill_rate: -3.0,
            },
            "refill_rate",
        ),
        (
            RateLimiterConfig {
                capacity: 1,
                refill_rate: f64::NAN,
            },
            "refill_rate",
        ),
        (
            RateLimiterConfig {
                capacity: 1,
                refill_rate: f64::INFINITY,
            },
            "refill_rate",
        ),
        (
            RateLimiterConfig {
                capacity: u64::MAX,
                refill_rate: 1e-9,
            },
            "capacity",
        ),
    ] {
        let err = RateLimiter::try_new("x", config).unwrap_err();
        assert_eq!(err.field, field, "{config:?}: {err}");
    }
}

#[tokio::test]
async fn an_invalid_config_via_new_refuses_instead_of_panicking() {
    let l = RateLimiter::new(
        "x",
        RateLimiterConfig {
            capacity: 0,
            refill_rate: f64::NAN,
        },
    );
    assert_eq!(
        l.try_acquire(1).await,
        Err(RateLimiterError::RateLimitExceeded)
    );
    assert_eq!(l.try_acquire(0).await, Ok(()));
}

#[test]
fn more_than_capacity_is_refused_and_has_no_wait_time() {
    let (l, _) = manual(5, 1.0, None);
    assert!(l.check(6).is_err());
    assert_eq!(l.time_until_available(6), None);
    assert_eq!(l.check_with_retry_after(6), Err(None));
    assert!(l.check(5).is_ok());
}

#[test]
fn time_until_available_is_the_retry_after() {
    let (l, clock) = manual(2, 4.0, None);
    assert!(l.check(2).is_ok());
    assert_eq!(l.time_until_available(1), Some(Duration::from_millis(250)));
    assert_eq!(
        l.check_with_retry_after(2),
        Err(Some(Duration::from_millis(500)))
    );
    clock.advance(Duration::from_millis(250));
    assert_eq!(l.available_tokens(), 1);
}

#[test]
fn set_rate_keeps_the_debt() {
    let (l, clock) = manual(10, 10.0, None);
    assert!(l.check(10).is_ok());
    // 10 tokens owed; at 10/s that is 1 s. Halving the rate makes it 2 s.
    l.set_rate(5.0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(l.available_tokens(), 5);
    clock.advance(Duration::from_secs(1));
    assert_eq!(l.available_tokens(), 10);
    assert_eq!(l.refill_rate(), 5.0);
}

#[test]
fn set_capacity_changes_the_burst() {
    let (l, clock) = manual(100, 10.0, None);
    l.set_capacity(200);
    clock.advance(Duration::from_secs(100));
    assert_eq!(l.available_tokens(), 200);
    assert!(l.check(200).is_ok());
    assert!(l.check(1).is_err());
    l.set_capacity(0); // ignored
    assert_eq!(l.capacity(), 200);
    assert!(l.try_set_rate(f64::NAN).is_err());
}

#[tokio::test(start_paused = true)]
async fn acquire_books_slots_in_order_and_sleeps_until_each() {
    let l = Arc::new(RateLimiter::new(
        "w",
        RateLimiterConfig {
            capacity: 1,
            refill_rate: 1.0,
        },
    ));
    let start = tokio::time::Instant::now();
    l.acquire(1, Duration::ZERO).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..3 {
        let l = Arc::clone(&l);
        handles.push(tokio::spawn(async move {
            l.acquire(1, Duration::from_secs(10)).await.unwrap();
            start.elapsed()
        }));
        tokio::task::yield_now().await;
    }
    let mut done = Vec::new();
    for h in handles {
        done.push(h.await.unwrap());
    }
    assert_eq!(
        done,
        [
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(3)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn acquire_fails_at_once_when_the_wait_is_too_long() {
    let l = RateLimiter::new(
        "w",
        RateLimiterConfig {
            capacity: 1,
            refill_rate: 1.0,
        },
    );
    l.acquire(1, Duration::ZERO).await.unwrap();
    let err = l.acquire(1, Duration::from_millis(500)).await.unwrap_err();
    assert_eq!(
        err,
        AcquireError::WouldWaitTooLong {
            wait: Duration::from_secs(1)
        }
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    // Nothing was taken by the refusal.
    assert_eq!(l.time_until_available(1), Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_gives_its_tokens_back() {
    let l = RateLimiter::new(
        "w",
        RateLimiterConfig {
            capacity: 1,
            refill_rate: 1.0,
        },
    );
    l.acquire(1, Duration::ZERO).await.unwrap();
    let waiting = tokio::time::timeout(
        Duration::from_millis(100),
        l.acquire(1, Duration::from_secs(5)),
    )
    .await;
    assert!(waiting.is_err());
    assert_eq!(l.time_until_available(1), Some(Duration::from_millis(900)));
}

#[test]
fn reservations_settle_to_the_real_usage() {
    let (l, _) = manual(1000, 1.0, Some(0));
    let r = l.reserve(500).unwrap();
    assert_eq!(l.available_tokens(), 500);
    r.settle(120);
    assert_eq!(l.available_tokens(), 880);
    let r = l.reserve(100).unwrap();
    r.settle(300);
    assert_eq!(l.available_tokens(), 580);
    assert!(l.reserve(2000).is_err());
}

#[test]
fn concurrent_threads_never_exceed_the_burst() {
    let (l, _clock) = manual(10_000, 1.0, None);
    let l = Arc::new(l);
    let admitted: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let l = Arc::clone(&l);
                s.spawn(move || (0..5_000).filter(|_| l.check(1).is_ok()).count() as u64)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert!(admitted <= 10_000, "admitted {admitted}");
    assert!(admitted >= 10_000 - 62, "admitted {admitted}");
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Take(u64),
    SetRate(f64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..400).prop_map(Op::Advance),
        8 => (1u64..6).prop_map(Op::Take),
        1 => prop::sample::select(vec![0.5, 1.0, 3.0, 10.0, 40.0]).prop_map(Op::SetRate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Over any interval [a, b], admitted tokens ≤ capacity + ∫ rate dt.
    #[test]
    fn admissions_never_exceed_capacity_plus_refill(
        capacity in 1u64..40,
        rate_index in 0usize..5,
        settle in prop::option::of(0u64..8),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let rates = [0.5, 1.0, 3.0, 10.0, 40.0];
        let mut rate = rates[rate_index];
        let (l, clock) = manual(capacity, rate, settle);
        let mut now_ms = 0u64;
        // (time ms, tokens) of admissions and (time ms, rate) of rate changes
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        let mut rate_changes: Vec<(u64, f64)> = vec![(0, rate)];
        for op in ops {
            match op {
                Op::Advance(ms) => { clock.advance(Duration::from_millis(ms)); now_ms += ms; }
                Op::Take(n) => if l.check(n).is_ok() { admitted.push((now_ms, n)); },
                Op::SetRate(r) => { l.set_rate(r); rate = r; rate_changes.push((now_ms, rate)); }
            }
        }
        let refill = |a: u64, b: u64| -> f64 {
            let mut total = 0.0;
            for (i, (start, r)) in rate_changes.iter().enumerate() {
                let end = rate_changes.get(i + 1).map_or(u64::MAX, |c| c.0);
                let lo = a.max(*start);
                let hi = b.min(end);
                if hi > lo { total += r * (hi - lo) as f64 / 1000.0; }
            }
            total
        };
        for i in 0..admitted.len() {
            let mut sum = 0u64;
            for j in i..admitted.len() {
                sum += admitted[j].1;
                let bound = capacity as f64 + refill(admitted[i].0, admitted[j].0);
                prop_assert!(sum as f64 <= bound + 1e-6,
                    "{sum} tokens in [{}, {}] ms > bound {bound}", admitted[i].0, admitted[j].0);
            }
        }
    }

    /// With exact accounting, the limiter admits exactly what a reference
    /// token bucket admits.
    #[test]
    fn exact_mode_matches_a_reference_bucket(
        capacity in 1u64..20,
        per_sec in prop::sample::select(vec![1u64, 2, 4, 5, 8, 10, 16, 20, 25, 40]),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let (l, clock) = manual(capacity, per_sec as f64, Some(0));
        let interval_ns = 1_000_000_000 / per_sec;
        // Reference: tokens in units of nanoseconds-of-refill.
        let mut level_ns = capacity * interval_ns;
        let cap_ns = level_ns;
        for op in ops {
            match op {
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    level_ns = (level_ns + ms * 1_000_000).min(cap_ns);
                }
                Op::Take(n) => {
                    let want = n * interval_ns;
                    let model = level_ns >= want;
                    if model { level_ns -= want; }
                    prop_assert_eq!(l.check(n).is_ok(), model);
                }
                Op::SetRate(_) => {}
            }
        }
    }
}
