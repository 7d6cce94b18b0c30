#![allow(clippy::unwrap_used, clippy::expect_used)]
//! tower layers share state across clones; metrics exist from the start.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use agent_patterns_core::AgentError;
use agent_patterns_resilience::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

async fn echo(req: u32) -> Result<u32, Infallible> {
    Ok(req)
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_limit() {
    let limiter = Arc::new(RateLimiter::new(
        "api",
        RateLimiterConfig {
            capacity: 2,
            refill_rate: 1.0,
        },
    ));
    let svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter))
        .service(service_fn(echo));
    let mut a = svc.clone();
    let mut b = svc.clone();
    assert_eq!(a.ready().await.unwrap().call(1).await.unwrap(), 1);
    assert_eq!(b.ready().await.unwrap().call(2).await.unwrap(), 2);
    let err = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(AgentError::from(err), AgentError::RateLimited);
}

#[tokio::test(start_paused = true)]
async fn keyed_layer_limits_each_key() {
    let limiter = Arc::new(
        KeyedRateLimiter::new(
            "per_user",
            RateLimiterConfig {
                capacity: 1,
                refill_rate: 1.0,
            },
            100,
        )
        .unwrap(),
    );
    let svc = ServiceBuilder::new()
        .layer(KeyedRateLimitLayer::new(limiter, |req: &u32| {
            Some(*req % 2)
        }))
        .service(service_fn(echo));
    assert!(svc.clone().oneshot(1).await.is_ok());
    assert!(svc.clone().oneshot(2).await.is_ok());
    assert_eq!(
        svc.clone().oneshot(3).await.unwrap_err().kind(),
        ErrorKind::RateLimited
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_layer_opens_on_failures_and_classified_responses() {
    let breaker = Arc::new(CircuitBreaker::new(
        "backend",
        CircuitBreakerConfig {
            failure_threshold: 2,
            success_threshold: 1,
            timeout: Duration::from_secs(10),
        },
    ));
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::with_classifier(
            Arc::clone(&breaker),
            |status: &u16| *status < 500,
        ))
        .service(service_fn(
            |code: u16| async move { Ok::<_, Infallible>(code) },
        ));
    assert_eq!(svc.clone().oneshot(200).await.unwrap(), 200);
    assert_eq!(svc.clone().oneshot(503).await.unwrap(), 503);
    assert_eq!(svc.clone().oneshot(500).await.unwrap(), 500);
    let err = svc.clone().oneshot(200).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn bulkhead_and_timeout_layers() {
    let bulkhead = Arc::new(
        Bulkhead::with_queue(
            "b",
            BulkheadConfig {
                max_concurrent: 1,
                acquire_timeout: Duration::from_secs(1),
            },
            0,
        )
        .unwrap(),
    );
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(2)))
        .layer(BulkheadLayer::new(Arc::clone(&bulkhead)))
        .service(service_fn(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Infallible>(ms)
        }));
    let slow = tokio::spawn(svc.clone().oneshot(1500));
    tokio::task::yield_now().await;
    let refused = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(AgentError::from(refused), AgentError::BulkheadFull);
    assert_eq!(slow.await.unwrap().unwrap(), 1500);
    let timed_out = svc.clone().oneshot(5000).await.unwrap_err();
    assert_eq!(timed_out.kind(), ErrorKind::Timeout);
    assert_eq!(
        AgentError::from(timed_out),
        AgentError::Timeout {
            duration: Duration::from_secs(2)
        }
    );
    assert_eq!(bulkhead.active(), 0);
}

#[test]
fn every_series_exists_from_the_start_with_the_guides_names() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (_l, _b, _h) = ::metrics::with_local_recorder(&recorder, || {
        (
            RateLimiter::new("api", RateLimiterConfig::default()),
            CircuitBreaker::new("llm", CircuitBreakerConfig::default()),
            Bulkhead::new("tools", BulkheadConfig::default()),
        )
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let value = |name: &str, labels: &[(&str, &str)]| {
        snapshot
            .iter()
            .find(|(k, _, _, _)| {
                k.key().name() == name
                    && labels.iter().all(|(lk, lv)| {
                        k.key().labels().any(|l| l.key() == *lk && l.value() == *lv)
                    })
            })
            .map(|(_, _, _, v)| v)
    };
    assert_eq!(
        value(
            "circuit_breaker_state",
            &[("name", "llm"), ("state", "closed")]
        ),
        Some(&DebugValue::Gauge(1.0.into()))
    );
    assert_eq!(
        value(
            "circuit_breaker_state",
            &[("name", "llm"), ("state", "open")]
        ),
        Some(&DebugValue::Gauge(0.0.into()))
    );
    assert_eq!(
        value(
            "circuit_breaker_state",
            &[("name", "llm"), ("state", "half_open")]
        ),
        Some(&DebugValue::Gauge(0.0.into()))
    );
    for counter in [
        "circuit_breaker_requests_total",
        "circuit_breaker_failures_total",
        "circuit_breaker_rejected_total",
    ] {
        assert_eq!(
            value(counter, &[("name", "llm")]),
            Some(&DebugValue::Counter(0)),
            "{counter}"
        );
    }
    for counter in ["rate_limiter_requests_total", "rate_limiter_rejected_total"] {
        assert_eq!(
            value(counter, &[("name", "api")]),
            Some(&DebugValue::Counter(0)),
            "{counter}"
        );
    }
    assert_eq!(
        value("bulkhead_active_requests", &[("name", "tools")]),
        Some(&DebugValue::Gauge(0.0.into()))
    );
    assert_eq!(
        value("bulkhead_queue_size", &[("name", "tools")]),
        Some(&DebugValue::Gauge(0.0.into()))
    );
    assert_eq!(
        value("bulkhead_rejected_total", &[("name", "tools")]),
        Some(&DebugValue::Counter(0))
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_count_what_happens() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (limiter, breaker) = ::metrics::with_local_recorder(&recorder, || {
        (
            RateLimiter::new(
                "api",
                RateLimiterConfig {
                    capacity: 3,
                    refill_rate: 1.0,
                },
            ),
            CircuitBreaker::new(
                "llm",
                CircuitBreakerConfig {
                    failure_threshold: 1,
                    ..Default::default()
                },
            ),
        )
    });
    for _ in 0..5 {
        let _ = limiter.try_acquire(1).await;
    }
    breaker.allow_request().await.unwrap();
    breaker.record_failure().await;
    let _ = breaker.allow_request().await;
    let snapshot = snapshotter.snapshot().into_vec();
    let value = |name: &str| {
        snapshot
            .iter()
            .find(|(k, _, _, _)| k.key().name() == name)
            .map(|(_, _, _, v)| v)
    };
    assert_eq!(
        value("rate_limiter_requests_total"),
        Some(&DebugValue::Counter(5))
    );
    assert_eq!(
        value("rate_limiter_rejected_total"),
        Some(&DebugValue::Counter(2))
    );
    assert_eq!(
        value("circuit_breaker_requests_total"),
        Some(&DebugValue::Counter(2))
    );
    assert_eq!(
        value("circuit_breaker_failures_total"),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        value("circuit_breaker_rejected_total"),
        Some(&DebugValue::Counter(1))
    );
}

#[tokio::test(start_paused = true)]
async fn the_active_gauge_counts_operations_that_hold_a_slot_across_an_await() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let bulkhead = Arc::new(::metrics::with_local_recorder(&recorder, || {
        Bulkhead::new(
            "gauge",
            BulkheadConfig {
                max_concurrent: 4,
                acquire_timeout: Duration::from_secs(1),
            },
        )
    }));
    // The debugging recorder hands out a gauge's change since the last
    // snapshot (it swaps the value to zero), so keep the running level.
    let level = std::cell::Cell::new(0.0f64);
    let active = || {
        let change = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(k, _, _, _)| k.key().name() == "bulkhead_active_requests")
            .map(|(_, _, _, v)| v);
        match change {
            Some(DebugValue::Gauge(v)) => level.set(level.get() + v.into_inner()),
            other => panic!("no active gauge: {other:?}"),
        }
        level.get()
    };
    let gauge = |n: f64| n;

    // Done in its first poll: the slot was held, the gauge never moved.
    assert_eq!(bulkhead.execute(async { 7 }).await.unwrap(), 7);
    assert_eq!(active(), gauge(0.0));

    // Suspended: counted until it completes.
    let (done, wait) = tokio::sync::oneshot::channel::<()>();
    let b = Arc::clone(&bulkhead);
    let task = tokio::spawn(async move { b.execute(wait).await });
    tokio::task::yield_now().await;
    assert_eq!(active(), gauge(1.0));
    assert_eq!(bulkhead.active(), 1);
    done.send(()).unwrap();
    task.await.unwrap().unwrap().unwrap();
    assert_eq!(active(), gauge(0.0));
    assert_eq!(bulkhead.active(), 0);

    // Cancelled while suspended: uncounted again.
    let (_keep, wait) = tokio::sync::oneshot::channel::<()>();
    let b = Arc::clone(&bulkhead);
    let task = tokio::spawn(async move { b.execute(wait).await });
    tokio::task::yield_now().await;
    assert_eq!(active(), gauge(1.0));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(active(), gauge(0.0));
    assert_eq!(bulkhead.active(), 0);

    // A permit taken by hand is counted while held.
    let permit = bulkhead.try_acquire().unwrap();
    assert_eq!(active(), gauge(1.0));
    drop(permit);
    assert_eq!(active(), gauge(0.0));
}
