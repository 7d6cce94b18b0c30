#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Circuit breaker: the guide's state machine, a reference model, modes,
//! windows and concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent_patterns_core::AgentError;
use agent_patterns_resilience::*;
use proptest::prelude::*;

fn config(failures: u32, successes: u32, timeout_ms: u64) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold: failures,
        success_threshold: successes,
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn manual(cfg: CircuitBreakerConfig) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder("t", cfg)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    (b, clock)
}

#[tokio::test(start_paused = true)]
async fn opens_after_failure_threshold_consecutive_failures() {
    let b = CircuitBreaker::new("llm".to_string(), config(5, 2, 60_000));
    for _ in 0..4 {
        b.allow_request().await.unwrap();
        b.record_failure().await;
    }
    b.record_success().await; // resets the streak
    for _ in 0..4 {
        b.record_failure().await;
    }
    assert_eq!(b.state(), CircuitState::Closed);
    b.record_failure().await;
    assert_eq!(b.state(), CircuitState::Open);
    let err: AgentError = b.allow_request().await.unwrap_err().into();
    assert_eq!(err, AgentError::CircuitBreakerOpen);
    assert_eq!(err.status_code().as_u16(), 503);
}

#[tokio::test(start_paused = true)]
async fn half_open_after_timeout_closes_after_success_threshold() {
    let b = CircuitBreaker::new("llm", config(1, 2, 60_000));
    b.record_failure().await;
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(b.allow_request().await.is_err());
    assert_eq!(b.retry_after(), Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(1)).await;
    b.allow_request().await.unwrap();
    assert_eq!(b.state(), CircuitState::HalfOpen);
    b.allow_request().await.unwrap();
    assert!(
        b.allow_request().await.is_err(),
        "only success_threshold trials at once"
    );
    b.record_success().await;
    assert_eq!(b.state(), CircuitState::HalfOpen);
    b.record_success().await;
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn one_failed_trial_reopens() {
    let b = CircuitBreaker::new("llm", config(1, 3, 1000));
    b.record_failure().await;
    tokio::time::advance(Duration::from_secs(1)).await;
    b.allow_request().await.unwrap();
    b.record_failure().await;
    assert_eq!(b.state(), CircuitState::Open);
    assert!(b.allow_request().await.is_err());
    let m = b.metrics();
    assert_eq!(m.times_opened, 2);
}

#[tokio::test(start_paused = true)]
async fn metrics_follow_the_guide() {
    let b = CircuitBreaker::new("llm", config(10, 2, 1000));
    for i in 0..10 {
        b.allow_request().await.unwrap();
        if i % 4 == 0 {
            b.record_failure().await;
        } else {
            b.record_success().await;
        }
    }
    let m = b.metrics();
    assert_eq!(m.total_requests, 10);
    assert!((m.failure_rate - 0.3).abs() < 1e-9);
    assert_eq!(m.state, CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn force_reset_and_update_config() {
    let b = CircuitBreaker::new("llm", config(1, 2, 60_000));
    b.record_failure().await;
    assert_eq!(b.state(), CircuitState::Open);
    b.force_reset().await;
    assert_eq!(b.state(), CircuitState::Closed);
    b.update_config(config(3, 2, 30_000));
    for _ in 0..2 {
        b.record_failure().await;
    }
    assert_eq!(b.state(), CircuitState::Closed);
    b.record_failure().await;
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(b.retry_after(), Duration::from_secs(30));
    b.update_config(config(0, 2, 1)); // invalid: ignored
    assert_eq!(b.config().failure_threshold, 3);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_trial_does_not_wedge_the_breaker() {
    let b = CircuitBreaker::builder("t", config(1, 1, 1000))
        .max_half_open_calls(1)
        .build()
        .unwrap();
    b.record_failure().await;
    tokio::time::advance(Duration::from_secs(1)).await;
    {
        let _permit = b.acquire_permission().unwrap();
        assert!(b.acquire_permission().is_err());
    } // cancelled: dropped without an outcome
    let permit = b.acquire_permission().unwrap();
    permit.success();
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_call_cancelled_mid_trial_gives_its_slot_back() {
    let b = CircuitBreaker::builder("t", config(1, 1, 1000))
        .max_half_open_calls(1)
        .build()
        .unwrap();
    b.record_failure().await;
    tokio::time::advance(Duration::from_secs(1)).await;
    // An unpolled call has asked nothing yet.
    let never_polled = b.call(async { Ok::<u8, ()>(1) });
    drop(never_polled);
    // A call suspended inside its trial holds the only slot...
    let (_hold, wait) = tokio::sync::oneshot::channel::<()>();
    let b2 = std::sync::Arc::new(b);
    let task = {
        let b = std::sync::Arc::clone(&b2);
        tokio::spawn(async move { b.call(async { wait.await.map_err(|_| ()) }).await.is_ok() })
    };
    tokio::task::yield_now().await;
    assert!(b2.acquire_permission().is_err());
    // ...until it is cancelled.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let permit = b2.acquire_permission().unwrap();
    permit.success();
    assert_eq!(b2.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn unreported_trials_are_reclaimed_after_the_timeout() {
    let b = CircuitBreaker::new("t", config(1, 1, 1000));
    b.record_failure().await;
    tokio::time::advance(Duration::from_secs(1)).await;
    b.allow_request().await.unwrap(); // the caller never reports back
    assert!(b.allow_request().await.is_err());
    tokio::time::advance(Duration::from_secs(1)).await;
    b.allow_request().await.unwrap();
    b.record_success().await;
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn call_records_outcomes_and_classifies() {
    let b = CircuitBreaker::new("t", config(2, 1, 1000));
    let ok: Result<u8, CallError<AgentError>> = b.call(async { Ok::<_, AgentError>(1) }).await;
    assert_eq!(ok.unwrap(), 1);
    // A client error is not the dependency's fault.
    for _ in 0..5 {
        let r = b
            .call_classified(
                async { Err::<u8, _>(AgentError::InvalidInput("x".into())) },
                |r| !matches!(r, Err(AgentError::LlmUnavailable(_))),
            )
            .await;
        assert!(matches!(r, Err(CallError::Failed(_))));
    }
    assert_eq!(b.state(), CircuitState::Closed);
    for _ in 0..2 {
        let _ = b
            .call(async { Err::<u8, _>(AgentError::LlmUnavailable("down".into())) })
            .await;
    }
    assert_eq!(b.state(), CircuitState::Open);
    let refused = b.call(async { Ok::<u8, AgentError>(1) }).await;
    let err: AgentError = refused.unwrap_err().into();
    assert_eq!(err, AgentError::CircuitBreakerOpen);
}

#[tokio::test(start_paused = true)]
async fn modes_override_the_state_machine() {
    let b = CircuitBreaker::new("t", config(1, 1, 1000));
    b.set_mode(BreakerMode::ForcedOpen);
    assert!(b.allow_request().await.is_err());
    b.set_mode(BreakerMode::Disabled);
    b.record_failure().await;
    assert_eq!(b.state(), CircuitState::Closed);
    b.set_mode(BreakerMode::MetricsOnly);
    b.record_failure().await;
    assert_eq!(b.state(), CircuitState::Open);
    assert!(
        b.allow_request().await.is_ok(),
        "metrics-only never refuses"
    );
    b.set_mode(BreakerMode::Normal);
    assert!(b.allow_request().await.is_err());
}

#[tokio::test(start_paused = true)]
async fn transitions_are_published() {
    let b = CircuitBreaker::new("llm", config(1, 1, 1000));
    let mut events = b.subscribe();
    b.record_failure().await;
    tokio::time::advance(Duration::from_secs(1)).await;
    b.allow_request().await.unwrap();
    b.record_success().await;
    let seen: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(
        seen,
        [
            (CircuitState::Closed, CircuitState::Open),
            (CircuitState::Open, CircuitState::HalfOpen),
            (CircuitState::HalfOpen, CircuitState::Closed),
        ]
    );
}

#[test]
fn count_window_opens_on_failure_rate_after_minimum_calls() {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder("w", config(1000, 1, 1000))
        .sliding_window(SlidingWindow {
            kind: WindowKind::Count(10),
            failure_rate_threshold: 0.5,
            minimum_calls: 10,
            ..SlidingWindow::default()
        })
        .clock(Arc::new(clock))
        .build()
        .unwrap();
    for _ in 0..5 {
        b.acquire_permission().unwrap().success();
    }
    for _ in 0..4 {
        b.acquire_permission().unwrap().failure();
    }
    assert_eq!(b.state(), CircuitState::Closed, "below minimum calls");
    b.acquire_permission().unwrap().success(); // 4 of 10 failed
    assert_eq!(b.state(), CircuitState::Closed);
    b.acquire_permission().unwrap().failure(); // the oldest success leaves: 5 of 10
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn time_window_counts_slow_calls() {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder("w", config(1000, 1, 1000))
        .sliding_window(SlidingWindow {
            kind: WindowKind::Time(Duration::from_secs(10)),
            failure_rate_threshold: 1.0,
            slow_call_rate_threshold: 0.5,
            slow_call_duration: Duration::from_secs(2),
            minimum_calls: 4,
        })
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    for _ in 0..2 {
        b.record_outcome(true, Duration::from_millis(10));
    }
    b.record_outcome(true, Duration::from_secs(3));
    assert_eq!(b.state(), CircuitState::Closed);
    // Old fast calls leave the window; slow ones dominate.
    clock.advance(Duration::from_secs(11));
    b.record_outcome(true, Duration::from_secs(3));
    b.record_outcome(true, Duration::from_secs(3));
    b.record_outcome(true, Duration::from_millis(1));
    assert_eq!(b.state(), CircuitState::Closed, "3 calls < minimum");
    b.record_outcome(true, Duration::from_millis(1));
    assert_eq!(b.state(), CircuitState::Open, "2 of 4 slow");
}

#[test]
fn invalid_configs_name_the_field() {
    assert_eq!(
        CircuitBreaker::try_new("x", config(0, 1, 1))
            .unwrap_err()
            .field,
        "failure_threshold"
    );
    assert_eq!(
        CircuitBreaker::try_new("x", config(1, 0, 1))
            .unwrap_err()
            .field,
        "success_threshold"
    );
    let err = CircuitBreaker::builder("x", config(1, 1, 1))
        .sliding_window(SlidingWindow {
            kind: WindowKind::Count(0),
            ..SlidingWindow::default()
        })
        .build()
        .unwrap_err();
    assert_eq!(err.field, "sliding_window.kind");
    // `new` clamps instead of panicking.
    let b = CircuitBreaker::new("x", config(0, 0, 1));
    assert_eq!(b.config().failure_threshold, 1);
}

#[test]
fn half_open_trials_never_exceed_the_bound_under_contention() {
    let clock = ManualClock::new();
    let b = Arc::new(
        CircuitBreaker::builder("c", config(1, 1_000_000, 1_000_000))
            .max_half_open_calls(3)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
    );
    b.acquire_permission().unwrap().failure();
    clock.advance(Duration::from_secs(1000));
    let in_flight = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (b, in_flight, peak) = (&b, &in_flight, &peak);
            s.spawn(move || {
                for i in 0..20_000 {
                    if let Ok(permit) = b.acquire_permission() {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        if (i + t) % 7 == 0 {
                            drop(permit); // cancelled
                        } else {
                            permit.success();
                        }
                    }
                }
            });
        }
    });
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert_eq!(b.state(), CircuitState::HalfOpen);
}

// ── reference model ─────────────────────────────────────────────────────────

#[derive(Debug, Clone, Copy)]
enum Op {
    Allow,
    Success,
    Failure,
    Advance(u64),
}

#[derive(Debug)]
struct Model {
    state: CircuitState,
    count: u32,
    trials: u32,
    since: u64,
}

fn step(m: &mut Model, op: Op, now: &mut u64, cfg: CircuitBreakerConfig) -> Option<bool> {
    let timeout = cfg.timeout.as_millis() as u64;
    match op {
        Op::Advance(ms) => {
            *now += ms;
            None
        }
        Op::Allow => Some(match m.state {
            CircuitState::Closed => true,
            CircuitState::Open if *now >= m.since + timeout => {
                *m = Model {
                    state: CircuitState::HalfOpen,
                    count: 0,
                    trials: 1,
                    since: *now,
                };
                true
            }
            CircuitState::Open => false,
            CircuitState::HalfOpen if m.trials < cfg.success_threshold => {
                m.trials += 1;
                true
            }
            CircuitState::HalfOpen if *now >= m.since + timeout => {
                m.trials = 1;
                m.since = *now;
                true
            }
            CircuitState::HalfOpen => false,
        }),
        Op::Success => {
            match m.state {
                CircuitState::Closed => m.count = 0,
                CircuitState::HalfOpen => {
                    m.trials = m.trials.saturating_sub(1);
                    m.count += 1;
                    if m.count >= cfg.success_threshold {
                        *m = Model {
                            state: CircuitState::Closed,
                            count: 0,
                            trials: 0,
                            since: m.since,
                        };
                    }
                }
                CircuitState::Open => {}
            }
            None
        }
        Op::Failure => {
            match m.state {
                CircuitState::Closed => {
                    m.count += 1;
                    if m.count >= cfg.failure_threshold {
                        *m = Model {
                            state: CircuitState::Open,
                            count: 0,
                            trials: 0,
                            since: *now,
                        };
                    }
                }
                CircuitState::HalfOpen => {
                    *m = Model {
                        state: CircuitState::Open,
                        count: 0,
                        trials: 0,
                        since: *now,
                    };
                }
                CircuitState::Open => {}
            }
            None
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Allow),
        3 => Just(Op::Success),
        3 => Just(Op::Failure),
        2 => (0u64..1500).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any sequence of outcomes and clock steps leaves the breaker in the
    /// model's state, with the model's decisions.
    #[test]
    fn breaker_matches_the_reference_model(
        failures in 1u32..6,
        successes in 1u32..4,
        timeout_ms in 1u64..1000,
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let cfg = config(failures, successes, timeout_ms);
        let (b, clock) = manual(cfg);
        let mut model = Model { state: CircuitState::Closed, count: 0, trials: 0, since: 0 };
        let mut now = 0;
        for op in ops {
            let expected = step(&mut model, op, &mut now, cfg);
            let actual = match op {
                Op::Allow => Some(b.acquire_permission().map(std::mem::forget).is_ok()),
                Op::Success => { b.record_outcome(true, Duration::ZERO); None }
                Op::Failure => { b.record_outcome(false, Duration::ZERO); None }
                Op::Advance(ms) => { clock.advance(Duration::from_millis(ms)); None }
            };
            prop_assert_eq!(actual, expected, "after {:?}", op);
            prop_assert_eq!(b.state(), model.state, "after {:?}", op);
        }
    }
}
