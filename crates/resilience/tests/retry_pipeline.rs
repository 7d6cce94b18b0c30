#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Retry, budget, timeout, fallback and the composed pipeline, on virtual time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agent_patterns_core::AgentError;
use agent_patterns_resilience::*;

fn no_jitter(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(350),
        multiplier: 2.0,
        jitter: Jitter::None,
        deadline: None,
        attempt_timeout: None,
    }
}

#[tokio::test(start_paused = true)]
async fn backs_off_exponentially_up_to_max_delay() {
    let retry = Retry::new("t", no_jitter(5)).unwrap();
    let start = tokio::time::Instant::now();
    let times = std::sync::Mutex::new(Vec::new());
    let result: Result<(), _> = retry
        .run(|_| async {
            times.lock().unwrap().push(start.elapsed().as_millis());
            Err(AgentError::Unavailable("down".into()))
        })
        .await;
    let err = result.unwrap_err();
    assert_eq!(err.attempts, 5);
    assert_eq!(*times.lock().unwrap(), [0, 100, 300, 650, 1000]);
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried() {
    let retry = Retry::new("t", no_jitter(5)).unwrap();
    let calls = AtomicU32::new(0);
    let r: Result<(), _> = retry
        .run(|_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(AgentError::InvalidInput("bad".into()))
        })
        .await;
    assert_eq!(r.unwrap_err().attempts, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_the_server_is_honoured() {
    let retry = Retry::new("t", no_jitter(2)).unwrap();
    let start = tokio::time::Instant::now();
    let r: Result<u8, RetryError<AgentError>> = retry
        .run_if(
            |attempt| async move {
                if attempt == 1 {
                    Err(AgentError::RateLimited)
                } else {
                    Ok(1)
                }
            },
            |_| RetryDecision::RetryAfter(Duration::from_secs(7)),
        )
        .await;
    assert_eq!(r.unwrap(), 1);
    assert_eq!(start.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_retrying() {
    let policy = RetryPolicy {
        deadline: Some(Duration::from_millis(250)),
        ..no_jitter(10)
    };
    let retry = Retry::new("t", policy).unwrap();
    let r: Result<(), _> = retry
        .run(|_| async { Err(AgentError::Unavailable("x".into())) })
        .await;
    assert_eq!(
        r.unwrap_err().attempts,
        2,
        "0 ms and 100 ms; the 300 ms retry is past the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_timeouts_become_agent_timeouts_and_are_retried() {
    let policy = RetryPolicy {
        attempt_timeout: Some(Duration::from_secs(1)),
        ..no_jitter(2)
    };
    let retry = Retry::new("t", policy).unwrap();
    let r: Result<(), _> = retry.run(|_| std::future::pending()).await;
    let e = r.unwrap_err();
    assert_eq!(e.attempts, 2);
    assert_eq!(
        e.error,
        AgentError::Timeout {
            duration: Duration::from_secs(1)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn jittered_delays_stay_within_bounds() {
    for jitter in [Jitter::Full, Jitter::Decorrelated] {
        let policy = RetryPolicy {
            jitter,
            ..no_jitter(6)
        };
        let retry = Retry::new("t", policy).unwrap();
        let start = tokio::time::Instant::now();
        let _: Result<(), _> = retry
            .run(|_| async { Err(AgentError::Unavailable("x".into())) })
            .await;
        assert!(
            start.elapsed() <= Duration::from_millis(350 * 5),
            "{jitter:?}: {:?}",
            start.elapsed()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_stops_retries() {
    let budget = Arc::new(RetryBudget::new(0.0, 0, Duration::from_secs(10)).unwrap());
    let retry = Retry::new("t", no_jitter(5))
        .unwrap()
        .with_budget(Arc::clone(&budget));
    let r: Result<(), _> = retry
        .run(|_| async { Err(AgentError::Unavailable("x".into())) })
        .await;
    assert_eq!(r.unwrap_err().attempts, 1);
    assert_eq!(budget.exhausted(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_budget_allows_a_ratio_of_requests_over_the_window() {
    let budget = RetryBudget::new(0.2, 0, Duration::from_secs(10)).unwrap();
    for _ in 0..50 {
        budget.deposit();
    }
    let granted = (0..100).filter(|_| budget.withdraw()).count();
    assert_eq!(granted, 10);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(!budget.withdraw(), "old requests left the window");
}

#[test]
fn invalid_policies_name_the_field() {
    assert_eq!(
        Retry::new(
            "t",
            RetryPolicy {
                max_attempts: 0,
                ..RetryPolicy::default()
            }
        )
        .unwrap_err()
        .field,
        "max_attempts"
    );
    assert_eq!(
        Retry::new(
            "t",
            RetryPolicy {
                multiplier: f64::NAN,
                ..RetryPolicy::default()
            }
        )
        .unwrap_err()
        .field,
        "multiplier"
    );
    assert_eq!(
        RetryBudget::new(-1.0, 1, Duration::from_secs(1))
            .unwrap_err()
            .field,
        "ratio"
    );
}

#[tokio::test(start_paused = true)]
async fn fallback_runs_only_for_temporary_errors() {
    let used = with_fallback(
        async { Err::<&str, _>(AgentError::LlmUnavailable("529".into())) },
        |_| async { Ok("fallback") },
    )
    .await;
    assert_eq!(used.unwrap(), "fallback");
    let permanent = with_fallback(
        async { Err::<&str, _>(AgentError::Llm("400".into())) },
        |_| async { Ok("fallback") },
    )
    .await;
    assert_eq!(permanent, Err(AgentError::Llm("400".into())));
}

#[tokio::test(start_paused = true)]
async fn pipeline_retries_then_the_breaker_opens_and_fails_fast() {
    let breaker = Arc::new(CircuitBreaker::new(
        "llm",
        CircuitBreakerConfig {
            failure_threshold: 3,
            success_threshold: 1,
            timeout: Duration::from_secs(30),
        },
    ));
    let pipeline = Pipeline::builder("llm")
        .rate_limiter(Arc::new(RateLimiter::new(
            "llm",
            RateLimiterConfig {
                capacity: 100,
                refill_rate: 100.0,
            },
        )))
        .circuit_breaker(Arc::clone(&breaker))
        .timeout(Duration::from_secs(5))
        .retry(no_jitter(5))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let r: Result<(), _> = pipeline
        .execute(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(AgentError::LlmUnavailable("down".into()))
        })
        .await;
    // Three failures open the breaker; the fourth attempt is refused, not retried.
    assert_eq!(r.unwrap_err(), AgentError::CircuitBreakerOpen);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(breaker.state(), CircuitState::Open);

    tokio::time::advance(Duration::from_secs(30)).await;
    let ok = pipeline
        .execute(|| async { Ok::<_, AgentError>("back") })
        .await;
    assert_eq!(ok.unwrap(), "back");
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn pipeline_times_out_attempts_and_refuses_when_rate_limited() {
    let pipeline = Pipeline::builder("tools")
        .rate_limiter(Arc::new(RateLimiter::new(
            "tools",
            RateLimiterConfig {
                capacity: 1,
                refill_rate: 0.001,
            },
        )))
        .bulkhead(Arc::new(Bulkhead::new("tools", BulkheadConfig::default())))
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let slow: Result<(), _> = pipeline.execute(std::future::pending).await;
    assert_eq!(
        slow.unwrap_err(),
        AgentError::Timeout {
            duration: Duration::from_millis(500)
        }
    );
    let limited = pipeline.execute(|| async { Ok::<_, AgentError>(()) }).await;
    assert_eq!(limited.unwrap_err(), AgentError::RateLimited);
}

#[tokio::test(start_paused = true)]
async fn client_errors_do_not_open_the_breaker() {
    let breaker = Arc::new(CircuitBreaker::new(
        "llm",
        CircuitBreakerConfig {
            failure_threshold: 1,
            ..Default::default()
        },
    ));
    let pipeline = Pipeline::builder("llm")
        .circuit_breaker(Arc::clone(&breaker))
        .build()
        .unwrap();
    for _ in 0..3 {
        let _: Result<(), _> = pipeline
            .execute(|| async { Err(AgentError::InvalidInput("empty".into())) })
            .await;
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
}
